"""ShuffleNet V2 against a PyTorch model written to the official
Efficient-3DCNNs models/shufflenetv2.py (MIT, Okan Köpüklü), with random
weights and BN statistics: test_convert's tagged-state test checks that every
tensor lands in one weight, not how the blocks wire them (the order of a
downsampling block's branches before the shuffle, say)."""
import gzip
import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from keras_r3d import convert  # noqa: E402

SHAPES = json.loads(gzip.open(pathlib.Path(__file__).with_name("data") / "official_state_dict_shapes.json.gz",
                              "rt").read())


def _conv_bn(inp, oup, stride):
    return nn.Sequential(nn.Conv3d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm3d(oup), nn.ReLU(inplace=True))


def _pointwise_bn(inp, oup):
    return [nn.Conv3d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm3d(oup), nn.ReLU(inplace=True)]


def _depthwise_bn(channels, stride):
    return [nn.Conv3d(channels, channels, 3, stride, 1, groups=channels, bias=False), nn.BatchNorm3d(channels)]


def _shuffle(x, groups):
    b, c, d, h, w = x.shape
    return x.view(b, groups, c // groups, d, h, w).transpose(1, 2).contiguous().view(b, c, d, h, w)


class _Unit(nn.Module):
    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride, half = stride, oup // 2
        if stride == 1:
            self.banch2 = nn.Sequential(*_pointwise_bn(half, half), *_depthwise_bn(half, 1), *_pointwise_bn(half, half))
        else:
            self.banch1 = nn.Sequential(*_depthwise_bn(inp, stride), *_pointwise_bn(inp, half))
            self.banch2 = nn.Sequential(*_pointwise_bn(inp, half), *_depthwise_bn(half, stride),
                                        *_pointwise_bn(half, half))

    def forward(self, x):
        if self.stride == 1:
            half = x.shape[1] // 2
            out = torch.cat((x[:, :half], self.banch2(x[:, half:])), 1)
        else:
            out = torch.cat((self.banch1(x), self.banch2(x)), 1)
        return _shuffle(out, 2)


class _ShuffleNetV2(nn.Module):
    def __init__(self, num_classes, widths=(24, 32, 64, 128), last=1024):
        super().__init__()
        self.conv1 = _conv_bn(3, widths[0], (1, 2, 2))
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        units, channels = [], widths[0]
        for width, repeats in zip(widths[1:], (4, 8, 4)):
            for i in range(repeats):
                units.append(_Unit(channels, width, 2 if i == 0 else 1))
                channels = width
        self.features = nn.Sequential(*units)
        self.conv_last = nn.Sequential(*_pointwise_bn(channels, last))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = self.conv_last(self.features(self.maxpool(self.conv1(x))))
        x = nn.functional.avg_pool3d(x, x.shape[-3:]).flatten(1)
        return self.classifier(x)


@pytest.mark.filterwarnings("ignore:.*the data set is not in the file name")
def test_shufflenetv2_matches_the_official_pytorch_model():
    torch.manual_seed(0)
    official = _ShuffleNetV2(SHAPES["num_classes"])
    assert {k: list(v.shape) for k, v in official.state_dict().items()} == SHAPES["models"]["ShuffleNetV2-0.25x"]
    generator = torch.Generator().manual_seed(1)
    for module in official.modules():
        if isinstance(module, nn.BatchNorm3d):  # trained-looking statistics
            n = module.num_features
            module.weight.data = torch.rand(n, generator=generator) + 0.5
            module.bias.data = torch.randn(n, generator=generator) * 0.2
            module.running_mean = torch.randn(n, generator=generator) * 0.2
            module.running_var = torch.rand(n, generator=generator) + 0.5
    official.eval()
    state = {k: v.numpy() for k, v in official.state_dict().items()}
    model = convert.convert_state_dict(state, arch="shufflenetv2", width_mult=0.25, input_shape=(16, 64, 64, 3))
    x = np.random.default_rng(2).standard_normal((2, 16, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = official(torch.from_numpy(x.transpose(0, 4, 1, 2, 3))).numpy()
    logits = np.asarray(model(x, training=False))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(logits, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
