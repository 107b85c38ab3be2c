"""keras_r3d.onnx_writer: every family's ONNX graph computes the Keras model's
logits, channels first with no layout transposes, in both layouts ("frames"
in onnxruntime, "ncdhw" in onnxruntime and OpenVINO) and for every input
form; other layers fall back to tf2onnx in `export_onnx`."""
import functools
import json

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from keras_r3d import export, fold_batch_norm, onnx_writer, preprocess, runtimes
from keras_r3d import layers as r3d_layers
from keras_r3d.preprocessing import Preprocessing
from keras_r3d.registry import get_spec
from tests.conftest import use_data_statistics

SMALL = {"num_classes": 5, "input_shape": (16, 32, 32, 3)}
FAMILIES = {  # name: builder overrides
    "ShuffleNetV1-0.5x": {}, "ShuffleNetV2-0.25x": {}, "MobileNetV1-0.5x": {}, "MobileNetV2-0.2x": {},
    "SqueezeNet-1.1": {}, "ResNet-18-A": {}, "ResNeXt-50-B-c32": {"cardinality": 4}, "C3D": {},
}


def _model(name, contract=None, **overrides):
    keras.utils.set_random_seed(0)
    # The overrides change the named configuration.
    model = get_spec(name).build(**SMALL, **overrides, **({"preprocessing": contract} if contract else {}))
    use_data_statistics(model, runtimes.random_frames(4, SMALL["input_shape"], seed=1))
    return model


def _run(proto, batch):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {runtimes.INPUT_NAME: batch})[0]


def _assert_matches(logits, model, clips):
    result = export.compare(logits, model.predict_on_batch(preprocess(clips, model.preprocessing)), "none")
    assert result["passed"] and result["max_abs_logit"] > 0.1, result


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_matches_keras_without_layout_transposes(name):
    model = _model(name, **FAMILIES[name])
    proto = onnx_writer.model_proto(fold_batch_norm(model), opset=export.DEFAULT_OPSET)
    clips = runtimes.random_frames(3, SMALL["input_shape"], seed=2)
    _assert_matches(_run(proto, clips), model, clips)
    ops = [node.op_type for node in proto.graph.node]
    # One transpose of the input, one per channel shuffle, and C3D's before its flatten.
    expected = 1 + sum(isinstance(layer, keras.layers.Permute) or type(layer).__name__ == "ChannelShuffle"
                       for layer in model.layers)
    assert ops.count("Transpose") == expected, ops
    assert "BatchNormalization" not in ops  # folded into the convs
    # Opset 13's IR version, which the Jetson TX2's onnxruntime 1.10 (IR <= 8) loads.
    assert proto.ir_version == 7


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_matches_keras_with_3d_convs_in_the_ncdhw_layout(name):
    model = _model(name, **FAMILIES[name])
    proto = onnx_writer.model_proto(fold_batch_norm(model), opset=export.DEFAULT_OPSET, layout="ncdhw")
    clips = runtimes.random_frames(3, SMALL["input_shape"], seed=2)
    _assert_matches(_run(proto, clips), model, clips)
    ops = [node.op_type for node in proto.graph.node]
    # One 5D Conv per conv layer, pools in 3D; no time slices or pads.
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    assert len(convs) == sum(isinstance(layer, r3d_layers.Conv3D) for layer in model.layers)
    pools = [node for node in proto.graph.node if node.op_type in ("MaxPool", "AveragePool")]
    for node in convs + pools:
        assert len(next(a.ints for a in node.attribute if a.name == "kernel_shape")) == 3, node.name
    channel_layers = {layer.name for layer in model.layers
                      if type(layer).__name__ in ("ChannelSlice", "ZeroChannelShortcut")}
    for node in proto.graph.node:  # slices and pads of channels only: no time taps
        assert node.op_type not in ("Slice", "Pad") or node.name.rsplit("_", 1)[0] in channel_layers, node.name
    assert ops.count("Transpose") == 1 + sum(isinstance(layer, keras.layers.Permute) or
                                             type(layer).__name__ == "ChannelShuffle" for layer in model.layers)
    pytest.importorskip("openvino")
    core = runtimes.openvino_core()
    compiled = core.compile_model(core.read_model(proto.SerializeToString()), "CPU", runtimes.OPENVINO_CONFIG)
    _assert_matches(compiled([clips])[0], model, clips)


def test_unfolded_batch_norm_and_dynamic_batch():
    model = _model("ShuffleNetV2-0.25x")
    proto = onnx_writer.model_proto(model, opset=export.DEFAULT_OPSET)
    assert "BatchNormalization" in [node.op_type for node in proto.graph.node]
    for batch in (1, 4):
        clips = runtimes.random_frames(batch, SMALL["input_shape"], seed=batch)
        _assert_matches(_run(proto, clips), model, clips)


@pytest.mark.parametrize("layout", onnx_writer.LAYOUTS)
def test_contract_is_applied_in_the_graph_for_every_input_form(layout):
    contract = Preprocessing(channel_order="BGR", value_range=(0.0, 1.0), mean=(0.45, 0.4, 0.5),
                             std=(0.2, 0.3, 0.25), frames=16, size=32)
    model = _model("MobileNetV2-0.2x", contract)
    folded = fold_batch_norm(model)
    clips = runtimes.random_frames(2, SMALL["input_shape"], seed=3)
    write = functools.partial(onnx_writer.model_proto, folded, opset=export.DEFAULT_OPSET, layout=layout)
    _assert_matches(_run(write(), clips), model, clips)
    _assert_matches(_run(write(input_dtype="float32"), clips.astype(np.float32)), model, clips)
    raw = write(raw_input=True)
    _assert_matches(_run(raw, preprocess(clips, contract)), model, clips)
    ops = [node.op_type for node in raw.graph.node]
    assert ops[:2] == (["Transpose", "Reshape"] if layout == "frames" else ["Transpose", "Conv"])  # no normalization
    with pytest.raises(ValueError, match="layout must be one of frames, ncdhw"):
        onnx_writer.model_proto(folded, opset=export.DEFAULT_OPSET, layout="ndhwc")


def test_newer_opset():
    model = _model("SqueezeNet-1.1")
    proto = onnx_writer.model_proto(fold_batch_norm(model), opset=18)
    assert (proto.opset_import[0].version, proto.ir_version) == (18, 8)
    clips = runtimes.random_frames(2, SMALL["input_shape"], seed=4)
    _assert_matches(_run(proto, clips), model, clips)
    with pytest.raises(onnx_writer.UnsupportedLayer, match="opset >= 11"):
        onnx_writer.model_proto(model, opset=10)


def test_a_softmax_head_is_written_without_tf2onnx():
    model = _model("ShuffleNetV2-0.25x", classifier_activation="softmax")
    proto = onnx_writer.model_proto(fold_batch_norm(model), opset=export.DEFAULT_OPSET)
    assert [node.op_type for node in proto.graph.node][-2:] == ["Softmax", "Identity"]  # Identity: the output name
    clips = runtimes.random_frames(2, SMALL["input_shape"], seed=6)
    _assert_matches(_run(proto, clips), model, clips)


def test_other_layers_fall_back_to_tf2onnx(tmp_path):
    model = _model("SqueezeNet-1.1")
    # The same graph with one layer the writer lacks: a leaky ReLU on the logits.
    leaky = keras.layers.LeakyReLU(negative_slope=0.1, name="leaky")(model.output)
    custom = type(model)(model.input, leaky, preprocessing=model.preprocessing,
                         class_names=model.class_names, architecture=model.architecture)
    with pytest.raises(onnx_writer.UnsupportedLayer, match="'leaky' \\(LeakyReLU\\)"):
        onnx_writer.model_proto(custom, opset=export.DEFAULT_OPSET)
    with pytest.raises(onnx_writer.UnsupportedLayer, match="--onnx_converter auto or tf2onnx"):
        export.export_onnx(custom, tmp_path / "writer.onnx", converter="keras_r3d")
    lines = []
    path = export.export_onnx(custom, tmp_path / "auto.onnx", log=lines.append)
    assert "converting with tf2onnx" in lines[0] and "leaky" in lines[0]
    assert runtimes.read_metadata(str(path))["converter"] == "tf2onnx"
    clips = runtimes.random_frames(2, SMALL["input_shape"], seed=5)
    reference = custom.predict_on_batch(preprocess(clips, custom.preprocessing))
    assert export.compare(runtimes.load_runtime(str(path))(clips), reference, "none")["passed"]


def test_export_reports_the_converter(tmp_path):
    model = _model("ShuffleNetV2-0.25x")
    report = export.export_model(model, tmp_path, ["onnx"])
    assert report["formats"]["onnx"]["converter"] == "keras_r3d" and report["passed"]
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(props[runtimes.METADATA_KEY])["converter"] == "keras_r3d"


def _sliced(proto):
    """(channels, height) of every tensor a `Slice` node reads: the writer's
    `(N, T, C, H, W)` time splits."""
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    return {tuple(dims[node.input[0]][2:4]) for node in proto.graph.node if node.op_type == "Slice"}


@pytest.mark.parametrize("frames", [16, 5])  # with 5, the last strided tap reads padding
def test_strided_taps_are_sliced_before_an_expansion(frames):
    keras.utils.set_random_seed(0)
    clips = keras.Input((frames, 12, 12, 3))
    x = keras.layers.ReLU()(r3d_layers.Conv3D(4, 3, padding=1, use_bias=True)(clips))
    x = r3d_layers.Conv3D(16, 1, use_bias=True)(x)  # a 4x expansion, as in MobileNetV2
    x = keras.layers.ReLU(max_value=6.0)(x)
    x = r3d_layers.Conv3D(16, 3, strides=2, padding=1, groups=16, use_bias=True)(x)
    model = keras.Model(clips, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling3D()(x)))
    proto = onnx_writer.model_proto(model, Preprocessing(frames=frames, size=12), raw_input=True,
                                    opset=export.DEFAULT_OPSET)
    batch = np.random.default_rng(0).normal(size=(2, frames, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(proto, batch), model.predict_on_batch(batch), rtol=1e-4, atol=1e-5)
    # The stem's taps slice the 3-channel input, the strided taps the 4-channel stem output; with
    # 16 frames the first strided tap reuses the last one's frames and shifts its 6x6 output.
    # Nothing slices the 16-channel expansion at 12x12.
    assert _sliced(proto) == ({(3, 12), (4, 12), (16, 6)} if frames == 16 else {(3, 12), (4, 12)})
    used = {name for node in proto.graph.node for name in node.input} | {runtimes.OUTPUT_NAME}
    assert all(name in used for node in proto.graph.node for name in node.output)  # pruned
    assert all(initializer.name in used for initializer in proto.graph.initializer)
    assert len({initializer.name for initializer in proto.graph.initializer}) == len(proto.graph.initializer)


@pytest.mark.parametrize("window, padding, frames, shifts", [
    (3, 1, 16, {"+1"}),  # the zoo's: tap 0 runs on tap 2's frames, one frame later
    (4, 1, 8, {"+1", "-1"}),  # tap 3 on tap 1's, one frame earlier
    (5, 2, 9, {"+1", "-1"}),  # taps 0 and 4 both on tap 2's; taps 1 and 3 padded
    (3, 1, 5, set()),  # both side taps read padding: sliced and padded
])
def test_strided_taps_shift_the_output_of_another_taps_frames(window, padding, frames, shifts):
    keras.utils.set_random_seed(0)
    clips = keras.Input((frames, 8, 8, 3))
    x = r3d_layers.Conv3D(5, (window, 3, 3), strides=2, padding=(padding, 1, 1), use_bias=True)(clips)
    model = keras.Model(clips, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling3D()(x)))
    proto = onnx_writer.model_proto(model, Preprocessing(frames=frames, size=8), raw_input=True,
                                    opset=export.DEFAULT_OPSET)
    batch = np.random.default_rng(0).normal(size=(2, frames, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(proto, batch), model.predict_on_batch(batch), rtol=1e-4, atol=1e-5)
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    found = set()
    for node in proto.graph.node:
        if node.name.startswith("shift_time"):
            pads = initializers[node.input[1]]
            found.add("+1" if pads[1] == 1 else "-1" if pads[6] == 1 else str(pads))
    assert found == shifts
