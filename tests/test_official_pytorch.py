"""Every family against PyTorch models written to the official
Efficient-3DCNNs models/*.py (MIT, Okan Köpüklü), with random weights and
trained-looking BN statistics.

test_convert's tagged-state test checks that every tensor lands in one Keras
weight, not how the blocks wire them: a branch order, a residual, a padding or
a stride, a channel split or shuffle, a flatten order. Here (1) each reference
module has the official state dict (keys and shapes, as shipped in
data/official_state_dict_shapes.json.gz), and (2) the converted Keras model's
logits equal the reference's, under the zoo's default lowering and under the
other backends' defaults. The modules are this project's own, written from the
official architecture; only ShuffleNet V1 also meets a real checkpoint
(test_convert).
"""
import gzip
import json
import math
import pathlib

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = nn.functional

from keras_r3d import convert, registry  # noqa: E402
from keras_r3d import layers as r3d_layers  # noqa: E402
from tests.conftest import assert_logits_mean_something  # noqa: E402

SHAPES = json.loads(gzip.open(pathlib.Path(__file__).with_name("data") / "official_state_dict_shapes.json.gz",
                              "rt").read())
NUM_CLASSES = 10  # the logits test's head; the shapes test uses the official 600


# ---------------------------------------------------------------- shared parts

def _conv_bn(cin, cout, kernel, stride=1, groups=1, act=nn.ReLU, bias=False):
    """[Conv3d (PyTorch padding kernel // 2), BatchNorm3d, activation]."""
    layers = [nn.Conv3d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias), nn.BatchNorm3d(cout)]
    return layers + ([act(inplace=True)] if act else [])


def _shuffle(x, groups):
    """(N, g*c, ...) -> channel i*g + j holds the old channel j*c + i."""
    n, channels = x.shape[:2]
    return x.reshape(n, groups, channels // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


def _global_head(x, classifier):
    """Average over (T, H, W), flatten, classifier (the efficient nets' head)."""
    return classifier(F.avg_pool3d(x, x.shape[-3:]).flatten(1))


def _efficient_classifier(channels, num_classes):
    return nn.Sequential(nn.Dropout(0.2), nn.Linear(channels, num_classes))


# ---------------------------------------------------------------- ShuffleNet V1

class _ShuffleV1Unit(nn.Module):
    def __init__(self, cin, cout, stride, groups):
        super().__init__()
        self.stride, self.groups, mid = stride, groups, cout // 4
        self.conv1 = nn.Conv3d(cin, mid, 1, groups=1 if cin == 24 else groups, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, cout - cin if stride == 2 else cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm3d(cout - cin if stride == 2 else cout)

    def forward(self, x):
        y = _shuffle(F.relu(self.bn1(self.conv1(x))), self.groups)
        y = self.bn3(self.conv3(self.bn2(self.conv2(y))))
        if self.stride == 2:  # count_include_pad: always divided by 18
            return F.relu(torch.cat([y, F.avg_pool3d(x, (2, 3, 3), 2, (0, 1, 1))], 1))
        return F.relu(y + x)


class _ShuffleNetV1(nn.Module):
    WIDTHS = {1: (24, 144, 288, 567), 2: (24, 200, 400, 800), 3: (24, 240, 480, 960),
              4: (24, 272, 544, 1088), 8: (24, 384, 768, 1536)}

    def __init__(self, num_classes, sample_size, sample_duration, groups, width_mult):
        super().__init__()
        widths = [int(w * width_mult) for w in self.WIDTHS[groups]]
        self.conv1 = nn.Sequential(*_conv_bn(3, widths[0], 3, (1, 2, 2)))
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        channels = widths[0]
        for stage, (width, blocks) in enumerate(zip(widths[1:], (4, 8, 4)), start=1):
            units = []
            for i in range(blocks):
                units.append(_ShuffleV1Unit(channels, width, 2 if i == 0 else 1, groups))
                channels = width
            setattr(self, f"layer{stage}", nn.Sequential(*units))
        self.classifier = _efficient_classifier(channels, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.maxpool(self.conv1(x)))))
        return _global_head(x, self.classifier)


# ---------------------------------------------------------------- ShuffleNet V2

class _ShuffleV2Unit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride, half = stride, cout // 2
        if stride == 1:  # the branch sees the second half of the channels
            self.banch2 = nn.Sequential(*_conv_bn(half, half, 1), *_conv_bn(half, half, 3, groups=half, act=None),
                                        *_conv_bn(half, half, 1))
        else:
            self.banch1 = nn.Sequential(*_conv_bn(cin, cin, 3, stride, groups=cin, act=None),
                                        *_conv_bn(cin, half, 1))
            self.banch2 = nn.Sequential(*_conv_bn(cin, half, 1),
                                        *_conv_bn(half, half, 3, stride, groups=half, act=None),
                                        *_conv_bn(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            half = x.shape[1] // 2
            out = torch.cat((x[:, :half], self.banch2(x[:, half:])), 1)
        else:
            out = torch.cat((self.banch1(x), self.banch2(x)), 1)
        return _shuffle(out, 2)


class _ShuffleNetV2(nn.Module):
    WIDTHS = {0.25: (32, 64, 128, 1024), 0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024),
              1.5: (176, 352, 704, 1024), 2.0: (224, 488, 976, 2048)}

    def __init__(self, num_classes, sample_size, sample_duration, width_mult):
        super().__init__()
        *widths, last = self.WIDTHS[width_mult]
        self.conv1 = nn.Sequential(*_conv_bn(3, 24, 3, (1, 2, 2)))
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        units, channels = [], 24
        for width, repeats in zip(widths, (4, 8, 4)):
            for i in range(repeats):
                units.append(_ShuffleV2Unit(channels, width, 2 if i == 0 else 1))
                channels = width
        self.features = nn.Sequential(*units)
        self.conv_last = nn.Sequential(*_conv_bn(channels, last, 1))
        self.classifier = _efficient_classifier(last, num_classes)

    def forward(self, x):
        return _global_head(self.conv_last(self.features(self.maxpool(self.conv1(x)))), self.classifier)


# ---------------------------------------------------------------- MobileNet V1

class _MobileV1Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm3d(cin)
        self.conv2 = nn.Conv3d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(cout)

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class _MobileNetV1(nn.Module):
    def __init__(self, num_classes, sample_size, sample_duration, width_mult):
        super().__init__()
        channels = int(32 * width_mult)
        blocks = [nn.Sequential(*_conv_bn(3, channels, 3, (1, 2, 2)))]
        for width, repeats, stride in ((64, 1, 2), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 1)):
            for i in range(repeats):
                blocks.append(_MobileV1Block(channels, int(width * width_mult), stride if i == 0 else 1))
                channels = int(width * width_mult)
        self.features = nn.Sequential(*blocks)
        self.classifier = _efficient_classifier(channels, num_classes)

    def forward(self, x):
        return _global_head(self.features(x), self.classifier)


# ---------------------------------------------------------------- MobileNet V2

class _InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = round(cin * expansion)
        self.residual = stride == 1 and cin == cout
        expand = _conv_bn(cin, hidden, 1, act=nn.ReLU6) if expansion != 1 else []
        self.conv = nn.Sequential(*expand, *_conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                                  *_conv_bn(hidden, cout, 1, act=None))

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class _MobileNetV2(nn.Module):
    def __init__(self, num_classes, sample_size, sample_duration, width_mult):
        super().__init__()
        channels = int(32 * width_mult)
        last = int(1280 * width_mult) if width_mult > 1 else 1280
        blocks = [nn.Sequential(*_conv_bn(3, channels, 3, (1, 2, 2), act=nn.ReLU6))]
        for t, width, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
            for i in range(repeats):
                blocks.append(_InvertedResidual(channels, int(width * width_mult), stride if i == 0 else 1, t))
                channels = int(width * width_mult)
        blocks.append(nn.Sequential(*_conv_bn(channels, last, 1, act=nn.ReLU6)))
        self.features = nn.Sequential(*blocks)
        self.classifier = _efficient_classifier(last, num_classes)

    def forward(self, x):
        return _global_head(self.features(x), self.classifier)


# ---------------------------------------------------------------- SqueezeNet

class _Fire(nn.Module):
    def __init__(self, cin, squeeze, expand, bypass):
        super().__init__()
        self.bypass = bypass
        self.squeeze = nn.Conv3d(cin, squeeze, 1)
        self.squeeze_bn = nn.BatchNorm3d(squeeze)
        self.expand1x1 = nn.Conv3d(squeeze, expand, 1)
        self.expand1x1_bn = nn.BatchNorm3d(expand)
        self.expand3x3 = nn.Conv3d(squeeze, expand, 3, padding=1)
        self.expand3x3_bn = nn.BatchNorm3d(expand)

    def forward(self, x):
        y = F.relu(self.squeeze_bn(self.squeeze(x)))
        y = torch.cat([self.expand1x1_bn(self.expand1x1(y)), self.expand3x3_bn(self.expand3x3(y))], 1)
        return F.relu(y + x if self.bypass else y)


class _SqueezeNet(nn.Module):
    # "M": max pool; (squeeze, expand per branch, bypass): a Fire module.
    LAYOUT = {
        1.0: ((96, 7), "M", (16, 64, 0), (16, 64, 1), "M", (32, 128, 0), (32, 128, 1), "M",
              (48, 192, 0), (48, 192, 1), (64, 256, 0), "M", (64, 256, 1)),
        1.1: ((64, 3), "M", (16, 64, 0), (16, 64, 1), "M", (32, 128, 0), (32, 128, 1), "M",
              (48, 192, 0), (48, 192, 1), "M", (64, 256, 0), (64, 256, 1)),
    }

    def __init__(self, num_classes, sample_size, sample_duration, version):
        super().__init__()
        (channels, kernel), *items = self.LAYOUT[version]
        layers = _conv_bn(3, channels, kernel, (1, 2, 2), bias=True)
        for item in items:
            if item == "M":
                layers.append(nn.MaxPool3d(3, 2, 1))
            else:
                layers.append(_Fire(channels, item[0], item[1], bool(item[2])))
                channels = 2 * item[1]
        self.features = nn.Sequential(*layers)
        pool = (math.ceil(sample_duration / 16), math.ceil(sample_size / 32), math.ceil(sample_size / 32))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv3d(channels, num_classes, 1), nn.ReLU(inplace=True),
                                        nn.AvgPool3d(pool, stride=1))

    def forward(self, x):
        return self.classifier(self.features(x)).flatten(1)


# ---------------------------------------------------------------- ResNet, ResNeXt

class _ResBlock(nn.Module):
    EXPANSION = {"basic": 1, "bottleneck": 4, "resnext": 2}

    def __init__(self, kind, cin, planes, stride, shortcut, cardinality):
        super().__init__()
        cout = planes * self.EXPANSION[kind]
        if kind == "basic":
            self.conv1 = nn.Conv3d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm3d(planes)
            self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm3d(planes)
        else:
            mid = planes if kind == "bottleneck" else cardinality * (planes // 32)
            self.conv1 = nn.Conv3d(cin, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm3d(mid)
            self.conv2 = nn.Conv3d(mid, mid, 3, stride, 1, groups=1 if kind == "bottleneck" else cardinality,
                                   bias=False)
            self.bn2 = nn.BatchNorm3d(mid)
            self.conv3 = nn.Conv3d(mid, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm3d(cout)
        self.stride, self.zeros = stride, 0
        if stride != 1 or cin != cout:
            if shortcut == "B":
                self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))
            else:  # A: strided identity, then zero channels after the existing ones
                self.zeros = cout - cin

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if hasattr(self, "conv3"):
            y = self.bn3(self.conv3(F.relu(y)))
        if hasattr(self, "downsample"):
            residual = self.downsample(x)
        else:
            s = self.stride
            residual = x[:, :, ::s, ::s, ::s]
            if self.zeros:
                residual = torch.cat([residual, residual.new_zeros(residual.shape[0], self.zeros,
                                                                   *residual.shape[2:])], 1)
        return F.relu(y + residual)


class _ResNet(nn.Module):
    DEPTHS = {("resnet", 10): ("basic", (1, 1, 1, 1)), ("resnet", 18): ("basic", (2, 2, 2, 2)),
              ("resnet", 34): ("basic", (3, 4, 6, 3)), ("resnet", 50): ("bottleneck", (3, 4, 6, 3)),
              ("resnext", 50): ("resnext", (3, 4, 6, 3)), ("resnext", 101): ("resnext", (3, 4, 23, 3))}

    def __init__(self, num_classes, sample_size, sample_duration, arch, depth, shortcut, cardinality=32):
        super().__init__()
        kind, blocks = self.DEPTHS[arch, depth]
        planes = (64, 128, 256, 512) if arch == "resnet" else (128, 256, 512, 1024)
        self.conv1 = nn.Conv3d(3, 64, 7, (1, 2, 2), 3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        channels = 64
        for stage, (repeats, width) in enumerate(zip(blocks, planes), start=1):
            layer = []
            for i in range(repeats):
                stride = 2 if stage > 1 and i == 0 else 1
                layer.append(_ResBlock(kind, channels, width, stride, shortcut, cardinality))
                channels = width * _ResBlock.EXPANSION[kind]
            setattr(self, f"layer{stage}", nn.Sequential(*layer))
        self.avgpool = nn.AvgPool3d((math.ceil(sample_duration / 16), math.ceil(sample_size / 32),
                                     math.ceil(sample_size / 32)), stride=1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


# ---------------------------------------------------------------- C3D

class _C3D(nn.Module):
    # Per group: conv widths, then the max pool (kernel, stride, padding).
    GROUPS = (((64,), ((2, 2, 2), (1, 2, 2), 0)), ((128,), (2, 2, 0)), ((256, 256), (2, 2, 0)),
              ((512, 512), (2, 2, 0)), ((512, 512), ((1, 2, 2), 2, (0, 1, 1))))

    def __init__(self, num_classes, sample_size, sample_duration):
        super().__init__()
        channels = 3
        for g, (widths, pool) in enumerate(self.GROUPS, start=1):
            layers = []
            for width in widths:
                layers += _conv_bn(channels, width, 3, bias=True)
                channels = width
            setattr(self, f"group{g}", nn.Sequential(*layers, nn.MaxPool3d(*pool)))
        flat = channels * (sample_duration // 16) * math.ceil(sample_size / 32) ** 2
        self.fc1 = nn.Sequential(nn.Linear(flat, 4096), nn.ReLU(), nn.Dropout(0.5))
        self.fc2 = nn.Sequential(nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5))
        self.fc = nn.Sequential(nn.Linear(4096, num_classes))

    def forward(self, x):
        for g in range(1, 6):
            x = getattr(self, f"group{g}")(x)
        return self.fc(self.fc2(self.fc1(x.flatten(1))))  # flattened in (C, T, H, W) order


# ---------------------------------------------------------------- the test

# registry name -> (reference module and its settings, (frames, size) of the logits test): the smallest
# width of each family, at the smallest input that keeps every stride-2 layer on an even size.
CASES = {
    "ShuffleNetV1-0.5x": ((_ShuffleNetV1, {"groups": 3, "width_mult": 0.5}), (16, 64)),  # at 32, torch's
    # AvgPool3d refuses layer3's 2x2 input (smaller than its 3x3 kernel, padding not counted)
    "ShuffleNetV2-0.25x": ((_ShuffleNetV2, {"width_mult": 0.25}), (16, 32)),
    "MobileNetV1-0.5x": ((_MobileNetV1, {"width_mult": 0.5}), (16, 32)),
    "MobileNetV2-0.2x": ((_MobileNetV2, {"width_mult": 0.2}), (16, 32)),
    "SqueezeNet-1.0": ((_SqueezeNet, {"version": 1.0}), (16, 32)),
    "SqueezeNet-1.1": ((_SqueezeNet, {"version": 1.1}), (16, 32)),
    "ResNet-18-A": ((_ResNet, {"arch": "resnet", "depth": 18, "shortcut": "A"}), (16, 32)),
    "ResNet-18-B": ((_ResNet, {"arch": "resnet", "depth": 18, "shortcut": "B"}), (16, 32)),
    "ResNet-50-B": ((_ResNet, {"arch": "resnet", "depth": 50, "shortcut": "B"}), (16, 32)),
    "ResNeXt-50-B-c32": ((_ResNet, {"arch": "resnext", "depth": 50, "shortcut": "B", "cardinality": 32}),
                         (16, 32)),
    # fc1's input is fixed by the clip size; 48 leaves a 1x2x2 map, so the flatten order counts.
    "C3D": ((_C3D, {}), (16, 48)),
}


def _randomize(model, seed, clips):
    """He-normal convs, unit-gain linear layers, small biases, random BN
    affines, and BN statistics as training leaves them: those of `clips`
    (with random statistics, the logits of the deep plain nets hardly depend
    on the input), variances floored at the layer's median (late layers see
    a handful of values per channel), means nudged off the data's."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=generator) * std

    norms = []
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.Linear)):
            gain = 2.0 if module.weight.ndim == 5 else 1.0
            module.weight.data = normal(module.weight.shape, math.sqrt(gain / module.weight[0].numel()))
            if module.bias is not None:
                module.bias.data = normal(module.bias.shape, 0.1)
        elif isinstance(module, nn.BatchNorm3d):
            module.weight.data = torch.rand(module.num_features, generator=generator) + 0.5
            module.bias.data = normal(module.num_features, 0.2)
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: after one batch, its statistics
            norms.append(module)
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    with torch.no_grad():
        model(clips)
    for module in norms:
        module.momentum = 0.1
        variance = module.running_var
        module.running_var = torch.maximum(variance, variance.median())
        module.running_mean += normal(module.num_features, 0.1) * module.running_var.sqrt()
    return model.eval()


def test_a_training_step_moves_the_batch_norm_statistics_as_pytorchs():
    """Fine-tuning moves the zoo's BN statistics as BatchNorm3d(momentum=0.1)
    moves the official models' (PyTorch's variance is unbiased: n / (n - 1))."""
    from keras_r3d.models import common

    x = np.random.default_rng(3).standard_normal((2, 4, 6, 6, 5)).astype(np.float32) * 2 + 1
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, common.batch_norm(inputs, "bn"))
    model(x, training=True)
    official = nn.BatchNorm3d(5).train()
    official(torch.from_numpy(x.transpose(0, 4, 1, 2, 3)))
    bn = model.get_layer("bn")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), official.running_mean.numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), official.running_var.numpy(),
                               rtol=2e-3)


@pytest.mark.filterwarnings("ignore:.*the data set is not in the file name")
@pytest.mark.parametrize("name", sorted(CASES))
def test_converted_model_matches_the_official_pytorch_model(name):
    spec = registry.get_spec(name)
    (module, settings), (frames, size) = CASES[name]
    # (1) The reference has the official state dict: keys and shapes, at the official 16x112x112 and 600 classes.
    with torch.device("meta"):
        official_shapes = module(SHAPES["num_classes"], SHAPES["input"][1], SHAPES["input"][0], **settings)
    assert SHAPES["input"] == [16, 112, 112]
    assert {k: list(v.shape) for k, v in official_shapes.state_dict().items()} == SHAPES["models"][name]

    # (2) Its logits, from random weights, are the converted Keras model's.
    clips = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 3, frames, size, size)).astype(np.float32))
    official = _randomize(module(NUM_CLASSES, size, frames, **settings), sorted(CASES).index(name), clips)
    state = {k: v.numpy() for k, v in official.state_dict().items()}
    model = convert.convert_state_dict(state, arch=spec.arch, input_shape=(frames, size, size, 3), **spec.kwargs)
    x = np.random.default_rng(2).standard_normal((2, frames, size, size, 3)).astype(np.float32)
    with torch.no_grad():  # in float64, so that the tolerance is all Keras' float32 rounding
        expected = official.double()(torch.from_numpy(x.transpose(0, 4, 1, 2, 3)).double()).numpy()
    assert expected.shape == (2, NUM_CLASSES)
    assert_logits_mean_something(expected)
    atol = 1e-4 * max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x, training=False)), expected, rtol=0, atol=atol)
    # The zoo layers' lowerings that the other backends run by default (PyTorch, JAX's CPU, JAX's GPU), here.
    for lowering in ("native", "s2d", "taps_matmul"):
        with r3d_layers.implementation(lowering):
            logits = keras.ops.convert_to_numpy(model(x, training=False))
        np.testing.assert_allclose(logits, expected, rtol=0, atol=atol, err_msg=lowering)
