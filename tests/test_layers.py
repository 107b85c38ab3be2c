"""The zoo's layers: every implementation computes the same function."""
import keras
import numpy as np
import pytest

from keras_r3d import layers


def _run(layer, x, implementation):
    with layers.implementation(implementation):
        return np.asarray(layer(x))


@pytest.mark.parametrize("filters,kernel,strides,padding,groups,bias,channels", [
    (8, 3, 1, 1, 1, False, 6),            # dense 3x3x3
    (8, 3, (1, 2, 2), 1, 1, True, 6),     # strided dense
    (8, 3, (1, 2, 2), 1, 1, True, 3),     # the RGB stems
    (6, 3, 2, 1, 6, False, 6),            # depthwise, strided on T, H, W
    (12, 1, 1, 0, 3, False, 6),           # ShuffleNet's grouped 1x1x1
    (12, 3, 2, 1, 3, False, 6),           # ResNeXt's grouped 3x3x3, strided
    (12, 3, 1, 1, 3, False, 6),           # ResNeXt's grouped 3x3x3 ("auto" on TF: "same" per group)
    (4, (7, 7, 7), (1, 2, 2), 3, 1, False, 3),  # ResNet's stem
    (12, 1, 2, 0, 1, True, 6),            # strided dense 1x1x1
    (6, (3, 2, 3), (2, 1, 1), (1, 0, 1), 6, True, 6),  # uneven depthwise
    (6, (3, 2, 3), 1, (1, 0, 1), 6, True, 6),  # uneven depthwise, stride 1 (the "pallas" kernel)
    (5, (3, 4, 2), 2, (1, 2, 0), 1, True, 3),  # "s2d": an even, uneven kernel strided on T too
])
def test_conv3d_implementations_agree_with_keras(filters, kernel, strides, padding, groups, bias, channels):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 10, 11, channels)).astype(np.float32)
    layer = layers.Conv3D(filters, kernel, strides=strides, padding=padding, groups=groups, use_bias=bias)
    layer.build(x.shape)
    if bias:
        layer.bias.assign(rng.standard_normal(filters).astype(np.float32))
    outputs = {name: _run(layer, x, name) for name in layers.IMPLEMENTATIONS
               if name != "pallas" or keras.backend.backend() == "jax"}
    reference = keras.layers.Conv3D(filters, kernel, strides=strides, padding="valid", groups=groups,
                                    use_bias=bias)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    pads = layer.padding
    padded = np.pad(x, [(0, 0)] + [(p, p) for p in pads] + [(0, 0)])
    expected = np.asarray(reference(padded))
    for name, y in outputs.items():
        assert y.shape == expected.shape == (2, *layer.compute_output_shape(x.shape)[1:]), name
        np.testing.assert_allclose(y, expected, atol=1e-4, err_msg=name)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow graph rewrite")
def test_no_native_conv3d_follows_a_pad_on_tensorflow():
    # Grappler's remapper fused such Pads into the Conv3D and broke MobileNetV2's
    # predict graph on an AVX-512 CPU (layers.Conv3D._dense_lowering).
    import tensorflow as tf

    from keras_r3d import create_model, preprocess, runtimes

    shape = (16, 32, 32, 3)
    for name in ("MobileNetV2-0.2x", "ResNeXt-50-B-c32", "C3D"):
        keras.utils.set_random_seed(0)
        model = create_model(name, num_classes=5, input_shape=shape)
        graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec((None,) + shape)).graph
        convs = [op for op in graph.get_operations() if op.type == "Conv3D"]
        assert convs, name  # 1x1x1 and stride-1 3x3x3 convs stay native
        assert not [op.name for op in convs if op.inputs[0].op.type in ("Pad", "PadV2")], name
    keras.utils.set_random_seed(0)
    model = create_model("MobileNetV2-0.2x", num_classes=5, input_shape=shape)
    clips = preprocess(runtimes.random_frames(3, shape, seed=2), model.preprocessing)
    np.testing.assert_allclose(model.predict_on_batch(clips), model(clips), atol=1e-5)


@pytest.mark.parametrize("frames, stride, live_taps", [(1, 1, 1), (2, 2, 2), (2, 1, 3)])
def test_frames_lowering_skips_time_taps_that_read_only_padding(frames, stride, live_taps, monkeypatch):
    # The late stages run at 1 or 2 frames; a padded tap there adds exact zeros,
    # and in full int8 a constant-zero tensor, which XNNPACK refuses.
    x = np.random.default_rng(3).standard_normal((2, frames, 5, 5, 4)).astype(np.float32)
    depthwise = layers.Conv3D(4, 3, strides=(stride, 1, 1), padding=1, groups=4)
    pool = layers.AvgPool3D(3, strides=(stride, 1, 1), padding=1)
    depthwise.build(x.shape)
    expected = {layer: _run(layer, x, "native") for layer in (depthwise, pool)}
    calls = []
    real = layers.ops.depthwise_conv
    monkeypatch.setattr(layers.ops, "depthwise_conv", lambda *a, **k: calls.append(1) or real(*a, **k))
    for layer in (depthwise, pool):
        np.testing.assert_allclose(_run(layer, x, "frames"), expected[layer], atol=1e-5)
    assert len(calls) == live_taps


def test_s2d_stem_pads_its_blocks_for_tensor_cores_in_16_bit_floats_on_a_gpu(monkeypatch):
    monkeypatch.setattr(layers, "_on_gpu", lambda: False)
    assert layers.tensor_core_channels("bfloat16") == 1
    monkeypatch.setattr(layers, "_on_gpu", lambda: True)
    assert [layers.tensor_core_channels(d) for d in ("float32", "bfloat16", "float16")] == [1, 8, 8]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 12, 11, 3)).astype(np.float32)
    stem = layers.Conv3D(6, 3, strides=(1, 2, 2), padding=1, dtype="bfloat16")
    stem.build(x.shape)
    seen = []
    original = layers.space_to_depth_conv
    monkeypatch.setattr(layers, "space_to_depth_conv", lambda *a: seen.append(a[3]) or original(*a))

    def run(name):
        with layers.implementation(name):
            return keras.ops.convert_to_numpy(keras.ops.cast(stem(x), "float32"))

    padded = run("s2d")
    assert seen == [8]
    np.testing.assert_allclose(padded, run("native"), atol=0.05, rtol=0.02)
    kernel = rng.standard_normal((3, 3, 3, 3, 6)).astype(np.float32)
    xp = np.pad(x, [(0, 0)] + [(1, 1)] * 3 + [(0, 0)])
    np.testing.assert_allclose(original(xp, kernel, (1, 2, 2), 8), original(xp, kernel, (1, 2, 2)), atol=1e-5)


@pytest.mark.parametrize("pool,strides,padding", [(3, 2, 1), ((2, 2, 2), (1, 2, 2), 0),
                                                    ((1, 2, 2), 2, (0, 1, 1))])
def test_max_pool_implementations_agree(pool, strides, padding):
    x = np.abs(np.random.default_rng(1).standard_normal((2, 8, 9, 10, 3))).astype(np.float32)
    layer = layers.MaxPool3D(pool, strides=strides, padding=padding)
    native, frames = _run(layer, x, "native"), _run(layer, x, "frames")
    np.testing.assert_allclose(native, frames, atol=1e-6)
    # Against a direct loop (zero padding; inputs are post-ReLU).
    p, k, s = layer.padding, layer.pool_size, layer.strides
    padded = np.pad(x, [(0, 0)] + [(q, q) for q in p] + [(0, 0)])
    out = native.shape[1:4]
    for t, h, w in [(0, 0, 0), (out[0] - 1, out[1] - 1, out[2] - 1), (out[0] // 2, 1, out[2] // 2)]:
        window = padded[:, t * s[0]:t * s[0] + k[0], h * s[1]:h * s[1] + k[1], w * s[2]:w * s[2] + k[2]]
        np.testing.assert_allclose(native[:, t, h, w], window.max(axis=(1, 2, 3)), atol=1e-6)


def test_avg_pool_counts_padding_like_pytorch():
    x = np.ones((1, 4, 5, 5, 2), np.float32)
    layer = layers.AvgPool3D((2, 3, 3), strides=2, padding=(0, 1, 1))
    for implementation in ("native", "frames"):
        y = _run(layer, x, implementation)
        assert y.shape == (1, 2, 3, 3, 2)
        # A corner window holds 2*2*2 ones out of 18 cells (count_include_pad=True).
        np.testing.assert_allclose(y[0, 0, 0, 0], 8 / 18, atol=1e-6)
        np.testing.assert_allclose(y[0, 0, 1, 1], 1.0, atol=1e-6)


def test_pool_strides_default_to_the_window_like_pytorch():
    x = np.abs(np.random.default_rng(3).standard_normal((1, 4, 6, 6, 2))).astype(np.float32)
    for layer in (layers.MaxPool3D((2, 3, 3)), layers.AvgPool3D((2, 3, 3))):
        assert layer.strides == (2, 3, 3)
        for implementation in ("native", "frames"):
            assert _run(layer, x, implementation).shape == (1, 2, 2, 2, 2)


def test_conv_kernels_start_as_pytorchs_fan_out_kaiming_normal():
    # kaiming_normal_(mode="fan_out"), the official init: std sqrt(2 / (filters * kt * kh * kw)), whatever
    # the input channels and groups.
    keras.utils.set_random_seed(0)
    for filters, channels, groups in [(64, 64, 64), (16, 64, 1)]:
        conv = layers.Conv3D(filters, 3 if groups > 1 else 1, groups=groups)
        conv.build((None, 4, 8, 8, channels))
        expected = np.sqrt(2 / (filters * np.prod(conv.kernel_size)))
        assert np.std(np.asarray(conv.kernel)) == pytest.approx(expected, rel=0.1)


def test_channel_shuffle_matches_pytorch_view_permute():
    x = np.arange(2 * 1 * 1 * 2 * 6, dtype=np.float32).reshape(2, 1, 1, 2, 6)
    y = np.asarray(layers.ChannelShuffle(3)(x))
    # torch: view(N, g, C/g, ...) -> transpose(1, 2) -> flatten, on channels.
    expected = x.reshape(2, 1, 1, 2, 3, 2).swapaxes(-1, -2).reshape(x.shape)
    np.testing.assert_array_equal(y, expected)
    assert list(y[0, 0, 0, 0]) == [0, 2, 4, 1, 3, 5]


def test_zero_channel_shortcut_subsamples_pads_and_stops_gradient():
    x = np.random.default_rng(2).standard_normal((1, 5, 4, 4, 3)).astype(np.float32)
    y = np.asarray(layers.ZeroChannelShortcut(5, 2)(x))
    assert y.shape == (1, 3, 2, 2, 5)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, ::2])
    assert not y[..., 3:].any()


def test_too_small_input_names_the_layer():
    with pytest.raises(ValueError, match="'pool'.*too small"):
        layers.MaxPool3D(3, strides=2, name="pool").compute_output_shape((None, 1, 8, 8, 3))
    with pytest.raises(ValueError, match="not divisible by groups"):
        layers.Conv3D(10, 1, groups=3, name="conv")
    with pytest.raises(ValueError, match="conv: groups must be >= 1, got 0"):
        layers.Conv3D(10, 1, groups=0, name="conv")


def test_implementation_rejects_unknown_names():
    with pytest.raises(ValueError, match="auto"):
        with layers.implementation("fast"):
            pass


def test_a_zoo_model_traces_again_under_another_implementation(monkeypatch):
    import keras_r3d

    model = keras_r3d.create_model("ShuffleNetV2-0.25x", num_classes=3, input_shape=(4, 16, 16, 3))
    x = np.random.default_rng(0).standard_normal((1, 4, 16, 16, 3)).astype(np.float32)
    traced = []
    call = layers.Conv3D.call
    monkeypatch.setattr(layers.Conv3D, "call", lambda self, *a, **k: (traced.append(1), call(self, *a, **k))[1])

    def traces(run):
        before = len(traced)
        result = run()
        return result, len(traced) > before

    first, retraced = traces(lambda: model.predict(x, verbose=0))
    assert retraced and not traces(lambda: model.predict(x, verbose=0))[1]  # cached
    with layers.implementation("native"):
        native, retraced = traces(lambda: model.predict(x, verbose=0))
    assert retraced
    assert traces(lambda: model.predict(x, verbose=0))[1]  # back under "auto": traced again
    np.testing.assert_allclose(native, first, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="the Pallas kernels are JAX's")
def test_pallas_layers_need_jax():
    with pytest.raises(ValueError, match='"pallas" needs the JAX backend'):
        with layers.implementation("pallas"):
            pass
