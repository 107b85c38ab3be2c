"""The scripts in benchmarks/ that are not keras_r3d.benchmark, on tiny settings
on the CPU: training throughput, the per-layer kernel profile (XLA's CPU thunks
stand in for GPU kernels), the stem and depthwise formulations, the demo probe
onnxruntime's thread settings over time, and the stacked-frames depthwise conv.
No timing is asserted."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO


def _run(script, args, backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_training_throughput(tmp_path):
    _run("training_throughput.py", ["--models=ShuffleNetV2-0.25x", "--frames=8", "--size=32", "--batch_size=2",
                                    "--steps=2", "--warmup=1", f"--output={tmp_path / 'train'}"], "tensorflow")
    result = json.loads((tmp_path / "train.json").read_text())
    assert result["backend"] == "tensorflow" and result["device"] == "cpu" and result["gpu"] is None
    (row,) = result["results"]
    assert row["model"] == "ShuffleNetV2-0.25x" and row["clips_per_s"] > 0 and row["jit_compile"] is False
    assert "| ShuffleNetV2-0.25x | no | 8x32x32 | 2 |" in (tmp_path / "train.md").read_text()


def test_gpu_profile_maps_kernels_to_layers(tmp_path):
    _run("gpu_profile.py", ["--models=ShuffleNetV2-0.25x", "--batch_size=1", "--input_shape=8,32,32",
                            "--calls=2", f"--output={tmp_path / 'profile'}"], "jax")
    rows = json.loads((tmp_path / "profile.json").read_text())["models"]["ShuffleNetV2-0.25x"]
    layers = {row["layer"] for row in rows}
    assert {"conv1_0", "maxpool", "features_0_banch2_3"} <= layers  # stem, pool, a depthwise conv
    assert all(row["us_per_call"] > 0 and row["kind"] != "?" for row in rows)
    markdown = (tmp_path / "profile.md").read_text()
    assert "## ShuffleNetV2-0.25x" in markdown and "| conv1_0 |" in markdown


def test_pallas_kernels_lower_for_cuda_and_equal_the_taps():
    # tests/pallas_check.py: Triton lowerings for a GPU from this CPU, the interpreter against the taps.
    env = {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "tests.pallas_check"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 13 and all(results.values()), results


def test_gpu_stem_formulations_agree(tmp_path):
    _run("gpu_stem.py", ["--batch_size=2", "--input_shape=4,16,16", "--calls=2",
                         f"--output={tmp_path / 'stem.json'}"], "jax")
    rows = json.loads((tmp_path / "stem.json").read_text())["rows"]
    assert [row["formulation"] for row in rows] == ["native", "patches", "frames9", "pallas", "s2d",
                                                    "s2d_frames", "pallas_s2d", "native_c4", "native_c8", "s2d_c4"]
    assert all(row["max_rel_diff_vs_native"] < 1e-5 and row["ms_median"] > 0 for row in rows)


def test_gpu_depthwise_formulations_agree(tmp_path):
    _run("gpu_depthwise.py", ["--name=MobileNetV2-0.2x", "--input_shape=4,16,16", "--batch_size=2",
                              "--calls=1", f"--output={tmp_path / 'dw.json'}"], "jax")
    result = json.loads((tmp_path / "dw.json").read_text())
    assert set(result["total_ms"]) == {"native", "taps", "taps_pad", "flat", "pallas", "pallas_c16", "pallas_c64"}
    assert {tuple(row["strides"]) for row in result["rows"]} == {(1, 1, 1), (2, 2, 2)}
    assert all(row["max_rel_diff_vs_native"] < 1e-5 for row in result["rows"])


def test_gpu_formulation_scripts_record_a_failing_formulation_and_go_on(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_depthwise
    import gpu_stem

    def fails(*args, **kwargs):
        raise NotImplementedError("no such kernel here")

    monkeypatch.setitem(gpu_stem.FORMULATIONS, "patches", fails)
    rows = gpu_stem.main(["--batch_size=1", "--input_shape=2,8,8", "--calls=1",
                          "--formulations=native,patches,frames9"])["rows"]
    assert [("error" in row) for row in rows] == [False, True, False]
    assert "NotImplementedError: no such kernel here" in rows[1]["error"]
    monkeypatch.setitem(gpu_depthwise.FORMULATIONS, "flat", fails)
    result = gpu_depthwise.main(["--name=MobileNetV2-0.2x", "--input_shape=4,16,16", "--batch_size=1",
                                 "--calls=1", "--formulations=native,flat"])
    assert all(("error" in row) == (row["formulation"] == "flat") for row in result["rows"])
    assert set(result["total_ms"]) == {"native"} and result["complete"]


def test_gpu_formulation_scripts_keep_the_rows_of_a_stopped_run(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_stem

    def stopped(*args, **kwargs):  # stopped mid-run; rows written before it stay
        raise KeyboardInterrupt

    monkeypatch.setitem(gpu_stem.FORMULATIONS, "frames9", stopped)
    output = tmp_path / "stem.json"
    with pytest.raises(KeyboardInterrupt):
        gpu_stem.main(["--batch_size=1", "--input_shape=2,8,8", "--calls=1", f"--output={output}",
                       "--formulations=native,patches,frames9"])
    result = json.loads(output.read_text())
    assert [row["formulation"] for row in result["rows"]] == ["native", "patches"] and not result["complete"]


def test_demo_probe_renders_and_trains_on_chosen_classes(tmp_path):
    _run("demo_probe.py", [f"--data={tmp_path / 'set'}", "--videos_per_class=8", "--size=32", "--video_frames=10",
                           "--shape_scale=0.6", "--rotation_degrees=280,340", "--frames=4", "--windows=1",
                           "--passes=2", "--clips_per_pass=4", "--models=plain,plain-separable-deep",
                           f"--output={tmp_path / 'probe'}"], "tensorflow")
    result = json.loads((tmp_path / "probe.json").read_text())
    assert result["train_clips"] + result["val_clips"] == 16  # the two rotation classes only
    assert [probe["model"] for probe in result["probes"]] == ["plain", "plain-separable-deep"]
    for probe in result["probes"]:
        assert [p["pass"] for p in probe["passes"]] == [1, 2]
        assert all(0.0 <= p["val_top1"] <= 1.0 for p in probe["passes"])


def test_demo_probe_yardsticks_differ_only_in_their_named_steps(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import demo_probe

    def layers(name):
        model = demo_probe.plain_cnn((4, 32, 32, 3), 2, **demo_probe.PLAIN_CNNS[name])
        convs = [(layer.kernel_size, layer.groups, layer.strides, layer.filters)
                 for layer in model.layers if hasattr(layer, "groups")]
        return convs, [layer.name for layer in model.layers]

    (dense, _), (separable, names) = layers("plain"), layers("plain-separable")
    assert [conv[:3] for conv in dense] == [((3, 3, 3), 1, (1, 2, 2))] + [((3, 3, 3), 1, (1, 1, 1))] * 3
    assert separable[0] == dense[0] and len(separable) == 1 + 2 * 3
    assert [groups > 1 for _, groups, _, _ in separable[1::2]] == [True] * 3  # depthwise, then pointwise
    assert {kernel for kernel, _, _, _ in separable[2::2]} == {(1, 1, 1)}
    assert [n for n in names if n.startswith("pool")] == ["pool0", "pool1", "pool2"]
    assert len(layers("plain-separable-deep")[0]) == 1 + 2 * 3 * 4

    strided, strided_names = layers("plain-separable-strided")
    assert [conv[2] for conv in strided[1::2]] == [(1, 1, 1), (2, 2, 2), (2, 2, 2)]
    assert [n for n in strided_names if n.startswith("pool")] == ["pool0"]
    assert [conv[3] for conv in strided] == [conv[3] for conv in separable]

    depthwise_relus = lambda names: [n for n in names if n.startswith("dw") and n.endswith("_relu")]
    assert depthwise_relus(names) == ["dw1_0_relu", "dw2_0_relu", "dw3_0_relu"]
    assert depthwise_relus(layers("plain-separable-linear")[1]) == []
    assert [conv[3] for conv in layers("plain-separable-narrow")[0][2::2]] == [16, 32, 64]


def test_onnxruntime_threads_alternates_the_settings(tmp_path):
    _run("onnxruntime_threads.py", ["--name=ShuffleNetV2-0.25x", "--seconds=0.1", "--calls=2",
                                    f"--output={tmp_path / 'threads'}"], "tensorflow")
    result = json.loads((tmp_path / "threads.json").read_text())
    (row,) = result["rounds"]  # one round: the time budget runs out after it
    assert all(row[setting] > 0 for setting in ("2 threads, spinning", "2 threads, no spinning", "1 thread"))
    markdown = (tmp_path / "threads.md").read_text()
    assert "| 1 thread | 1 |" in markdown and "beat 2 spinning threads in" in markdown
    assert (tmp_path / "threads.png").read_bytes().startswith(b"\x89PNG")


def test_onnx_stacked_frames_computes_the_depthwise_conv_of_the_time_taps(tmp_path):
    import importlib.util

    import onnxruntime as ort

    spec = importlib.util.spec_from_file_location("stacked", REPO / "benchmarks" / "onnx_stacked_frames.py")
    stacked = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stacked)
    rng = np.random.default_rng(1)
    frames, channels, size = 3, 2, 5
    kernel = rng.standard_normal((3, channels, 1, 3, 3)).astype(np.float32)  # (time tap, C, 1, kh, kw)
    clip = rng.standard_normal((frames, channels, size, size)).astype(np.float32)
    padded = np.pad(clip, ((1, 1), (0, 0), (1, 1), (1, 1)))  # a depthwise 3x3x3 conv, padding 1, then ReLU
    expected = np.maximum(0, sum(kernel[j, None, :, 0, a, b, None, None]
                                 * padded[j:j + frames, :, a:a + size, b:b + size]
                                 for j in range(3) for a in range(3) for b in range(3)))
    for build, feed in ((stacked.time_taps_graph, clip), (stacked.stacked_graph, stacked.stack(clip))):
        session = ort.InferenceSession(build(kernel, frames, size).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        out = session.run(None, {"x": feed})[0]
        out = stacked.unstack(out, frames) if out.shape[0] == 1 else out
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    _run("onnx_stacked_frames.py", ["--shapes=2,8,6", "--calls=2", "--rounds=1", "--threads=1",
                                    f"--output={tmp_path / 'stacked'}"], "tensorflow")
    rows = json.loads((tmp_path / "stacked.json").read_text())["rows"]
    assert [row["pointwise"] for row in rows] == [False, True]  # without and with a 1x1 conv after
    assert all(row["max_abs_difference"] < 1e-4 * row["max_abs_output"] for row in rows)
    assert "| 2 × 8 × 6 × 6 | yes | 1 |" in (tmp_path / "stacked.md").read_text()
