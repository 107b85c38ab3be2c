"""keras_r3d.benchmark: a CLI smoke run on tiny settings (TF in process, JAX
through its worker subprocess), the official-code path against a stand-in
checkout; and the reporting logic, keras_r3d.benchmark_report. No timing is
asserted."""
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest

from keras_r3d import benchmark, benchmark_report

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = {"input_shape": (8, 32, 32, 3), "num_classes": 5, "batch_sizes": [1], "warmup": 0, "warmup_s": 0.0,
        "repeats": 1, "threads": 2, "tf32": False, "tf_jit_compile": ["false"],
        "precisions": ["float32"], "official_memory_formats": ["contiguous"], "layers": ["auto"],
        "batch_norm": ["separate"], "onnx_converters": ["auto"]}


def test_cli_smoke_tensorflow_and_jax(tmp_path):
    command = [sys.executable, "-m", "keras_r3d.benchmark", "--models=ShuffleNetV2-0.25x",
               "--backends=tensorflow,jax", "--runtimes=keras", "--input_shape=8,32,32",
               "--batch_sizes=1,2", "--warmup=0", "--repeats=1", "--num_classes=5",
               f"--output_dir={tmp_path}", "--tag=smoke"]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((tmp_path / "smoke.json").read_text())
    run = results["run"]
    assert run["cpu_model"] and run["cpu_cores"] >= 1 and "keras" in run["versions"]
    assert "--models=ShuffleNetV2-0.25x" in run["command"]
    assert isinstance(run["load_1min_before"], float) and isinstance(run["load_1min_after"], float)
    facts = results["models"]["ShuffleNetV2-0.25x"]
    assert facts["paper"]["titan_xp_cps"] == 442  # Table 8, read from table8.json
    assert facts["params_M"] > 0 and facts["mflops"] > 0
    rows = results["results"]
    assert sorted((r["backend"], r["batch_size"]) for r in rows) == [
        ("jax", 1), ("jax", 2), ("tensorflow", 1), ("tensorflow", 2)]
    for row in rows:
        assert row["status"] == "ok", row
        cps = row["clips_per_s"]
        assert 0 < cps["min"] <= cps["median"] <= cps["max"]
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
        assert row["compile_s"] > 0 and row["peak_rss_mib"] > 0 and row["repeats"] == 1
        if row["peak_rss_scope"] == "measurement":  # where the kernel lets the peak be reset
            assert 0 < row["rss_added_mib"] < row["peak_rss_mib"]

    markdown = (tmp_path / "smoke.md").read_text()
    assert "| ShuffleNetV2-0.25x | 0.83 / " in markdown  # paper params beside ours
    table_row = next(line for line in markdown.splitlines() if line.startswith("| ShuffleNetV2-0.25x | 0.83 / "))
    for row in rows:  # the JSON's numbers, in the tables
        cps = row["clips_per_s"]
        assert f"| {cps['median']:,.1f} [{cps['min']:,.1f}–{cps['max']:,.1f}] |" in table_row
        added = f" (+{row['rss_added_mib']:,.0f})" if "rss_added_mib" in row else ""
        assert f"| {row['peak_rss_mib']:,.0f}{added} |" in markdown
    assert "Keras (tensorflow) float32 b2" in markdown and "Keras (jax) float32 b1" in markdown
    assert "GPU rows: **not measured**, this machine has no GPU." in markdown or run["gpus"]
    assert "**Not Table 8's setting** (16×112×112 clips, 600 classes)" in markdown  # 8×32×32, 5 classes
    png = (tmp_path / "smoke.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000

    # --rerender says what it wrote; a wrong file and a shape a model cannot take are one-line errors.
    for extra, code, message in (([f"--rerender={tmp_path / 'smoke.json'}"], 0, f"wrote {tmp_path / 'smoke.md'}"),
                                 ([f"--rerender={tmp_path / 'smoke.md'}"], 1, "error: --rerender: "),
                                 # --overwrite gets past the earlier run of the tag, to the odd shape.
                                 (command[3:] + ["--input_shape=8,32,31", "--overwrite"], 1,
                                  "error: ShuffleNetV2-0.25x: shufflenetv2: frames must be square"),
                                 # One model that cannot take the shape is an error row; the others are measured.
                                 (command[3:] + ["--models=ShuffleNetV1-0.5x,ShuffleNetV2-0.25x", "--tag=mixed",
                                                 "--input_shape=4,16,16", "--backends=tensorflow",
                                                 "--batch_sizes=1"], 1, "mixed.png (2 rows, 1 failed)"),
                                 ([f"--rerender={tmp_path / 'smoke.json'}", "--tag=other"], 1,
                                  "error: --rerender writes beside its JSON"),
                                 ([f"--rerender={tmp_path / 'smoke.json'}", f"--output_dir={tmp_path}"], 1,
                                  "error: --rerender writes beside its JSON"),
                                 (command[3:] + [f"--output_dir={tmp_path / 'smoke.json'}"], 1,
                                  "smoke.json: cannot write there ("),
                                 (command[3:], 1, "smoke.json holds an earlier run: pass --overwrite to replace it")):
        done = subprocess.run(command[:3] + extra, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == code and message in done.stderr, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
    mixed = json.loads((tmp_path / "mixed.json").read_text())
    assert list(mixed["models"]) == ["ShuffleNetV2-0.25x"]
    assert [(row["model"], row["status"][:64]) for row in mixed["results"]] == [
        ("ShuffleNetV1-0.5x", "error: shufflenet cannot be built for input_shape=(4, 16, 16, 3)"),
        ("ShuffleNetV2-0.25x", "ok")]


def _flags(**overrides):
    values = {"models": "ShuffleNetV2-0.25x", "backends": ["tensorflow"], "runtimes": ["keras"],
              "precision": ["float32"], "batch_sizes": ["8", "1"], "input_shape": "16,112,112",
              "num_classes": 600, "warmup": 1, "warmup_s": 0.5, "repeats": 2, "threads": None,
              "tf32": False, "tf_jit_compile": ["auto"], "official_modes": ["eager", "compile"], "layers": ["auto"],
              "batch_norm": ["separate"], "onnx_converters": ["auto"],
              "official_repo": None, "official_memory_formats": ["contiguous"], "profile_layers": False,
              "rounds": 1}
    return types.SimpleNamespace(**{**values, **overrides})


def test_cli_exits_1_when_a_cell_failed(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "shufflenetv2.py").write_text("import torch\n")  # builds no model: error rows
    command = [sys.executable, "-m", "keras_r3d.benchmark", "--models=ShuffleNetV2-0.25x", "--runtimes=keras",
               "--input_shape=8,32,32", "--batch_sizes=1", "--warmup=0", "--warmup_s=0", "--repeats=1",
               "--num_classes=5", "--precision=float32,int8", f"--official_repo={tmp_path}",
               "--official_modes=eager", f"--output_dir={tmp_path}", "--tag=failed"]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                          capture_output=True, text=True, timeout=600)
    # Not applicable is no failure.
    assert done.returncode == 1 and "(4 rows, 1 failed)" in done.stderr, done.stderr[-2000:]
    rows = json.loads((tmp_path / "failed.json").read_text())["results"]
    assert [(row["runtime"], row["status"].split(":")[0]) for row in rows] == [
        ("keras", "ok"), ("keras", "not applicable"), ("official-eager", "error"), ("official-eager", "not applicable")]


def test_settings_from_flags_checks_every_argument(tmp_path):
    settings = benchmark.settings_from_flags(_flags())
    assert settings["batch_sizes"] == [1, 8] and settings["input_shape"] == (16, 112, 112, 3)
    assert settings["threads"] >= 1 and settings["models"] == ["ShuffleNetV2-0.25x"]
    # A value given twice is measured once, in the order first given.
    twice = benchmark.settings_from_flags(_flags(backends=["jax", "tensorflow", "jax"], precision=["int8", "int8"]))
    assert twice["backends"] == ["jax", "tensorflow"] and twice["precisions"] == ["int8"]
    for bad, message in ((dict(backends=["tensorflow", "mxnet"]), "mxnet"),
                         (dict(models="NoSuchNet"), "NoSuchNet"),
                         (dict(input_shape="16,112"), "input_shape"),
                         (dict(input_shape="0,112,112"), "positive ints"),
                         (dict(precision=["int4"]), "int4"),
                         (dict(batch_sizes=["0"]), "positive"),
                         (dict(runtimes=[]), "runtimes"),
                         (dict(layers=["2d"]), "layers"),
                         (dict(batch_norm=["fused"]), "batch_norm"),
                         (dict(onnx_converters=["onnx-tf"]), "onnx_converters"),
                         (dict(official_memory_formats=["nhwc"]), "official_memory_formats"),
                         (dict(official_repo=str(tmp_path)), "has no models/shufflenetv2.py")):
        with pytest.raises(ValueError, match=message):
            benchmark.settings_from_flags(_flags(**bad))
    _official_stand_in(tmp_path)  # its ShuffleNetV2, but no MobileNetV2
    assert benchmark.settings_from_flags(_flags(official_repo=str(tmp_path)))["official_repo"] == str(tmp_path)
    with pytest.raises(ValueError, match=r"has no models/mobilenetv2.py: point it at a checkout"):
        benchmark.settings_from_flags(_flags(official_repo=str(tmp_path), models="ShuffleNetV2-0.25x,MobileNetV2-1.0x"))


def test_exported_runtimes(tmp_path):
    """Calibrated int8 TFLite through keras_r3d.export and keras_r3d.runtimes
    (float32 takes the same path, less calibration); TensorRT says what is
    missing where it cannot run, and has no int8 path here."""
    rows = []
    settings = {**TINY, "precisions": ["int8"]}
    benchmark.measure_exported("ShuffleNetV2-0.25x", ["tflite", "tensorrt"], settings, rows.append)
    by_key = {(r["runtime"], r["precision"]): r for r in rows}
    row = by_key[("tflite", "int8")]
    assert row["status"] == "ok", row
    assert row["backend"].startswith("tflite") and row["artifact_bytes"] > 0
    assert row["export_s"] > 0 and row["clips_per_s"]["median"] > 0
    assert row["tflite_op_counts"]["DEPTHWISE_CONV_2D"] > 0 and "CONV_3D" not in row["tflite_op_counts"]
    assert by_key[("tensorrt", "int8")]["status"].startswith("not applicable")
    rows.clear()
    benchmark.measure_exported("ShuffleNetV2-0.25x", ["tensorrt"], TINY, rows.append)
    assert rows[0]["status"] == "ok" or (rows[0]["status"].startswith("not measured: ")
                                         and "tensorrt" in rows[0]["status"])


def test_onnxruntime_rows_say_where_the_time_goes():
    rows = []
    benchmark.measure_exported("ShuffleNetV2-0.25x", ["onnxruntime"], TINY, rows.append)
    assert rows[0]["status"] == "ok", rows[0]
    assert benchmark_report.series_label(rows[0]) == "ONNX Runtime (auto: keras_r3d ONNX) float32"  # the one chosen
    ops = rows[0]["onnxruntime_op_time"]
    shares = [share for share, _ in ops.values()]
    assert abs(sum(shares) - 1.0) < 1e-3 and shares == sorted(shares, reverse=True)
    assert {"Conv", "FusedConv"} & set(ops) and all(nodes >= 1 for _, nodes in ops.values())
    section = "\n".join(benchmark_report._op_time_section(rows, "onnxruntime"))
    top_op, (top_share, top_nodes) = next(iter(ops.items()))
    assert f"- **ShuffleNetV2-0.25x**: {top_op} {top_share:.0%} ({top_nodes})" in section


def test_openvino_rows_run_the_3d_conv_file_and_say_where_the_time_goes():
    pytest.importorskip("openvino")
    rows = []
    benchmark.measure_exported("ShuffleNetV2-0.25x", ["openvino"], {**TINY, "batch_sizes": [1, 2]}, rows.append)
    assert [(row["status"], row["backend"], row["batch_size"]) for row in rows] == [
        ("ok", "openvino", 1), ("ok", "openvino", 2)], rows
    assert benchmark_report.series_label(rows[0]) == "OpenVINO (auto: keras_r3d ONNX) float32"  # not tf2onnx's
    ops = rows[0]["openvino_op_time"]
    shares = [share for share, _ in ops.values()]
    assert abs(sum(shares) - 1.0) < 1e-3 and shares == sorted(shares, reverse=True)
    # The depthwise 3x3x3 convs run as 3D grouped convolutions, one node each (no time taps).
    assert ops["GroupConvolution"][1] == sum(layer.groups > 1 for layer in _zoo_convs("ShuffleNetV2-0.25x"))
    section = "\n".join(benchmark_report._op_time_section(rows, "openvino"))
    assert section.startswith("## Where the time goes in openvino") and "OpenVINO node type" in section
    rows.clear()
    benchmark.measure_exported("ShuffleNetV2-0.25x", ["openvino"], {**TINY, "precisions": ["bfloat16"]},
                               rows.append)
    assert rows[0]["status"] == "not applicable: openvino exports float32"


def _zoo_convs(name):
    from keras_r3d import create_model
    from keras_r3d.layers import Conv3D

    model = create_model(name, num_classes=TINY["num_classes"], input_shape=TINY["input_shape"])
    return [layer for layer in model.layers if isinstance(layer, Conv3D)]


def test_onnx_rows_for_each_converter():
    """--onnx_converters=keras_r3d,tf2onnx times the writer's and tf2onnx's ONNX."""
    rows = []
    benchmark.measure_exported("SqueezeNet-1.1", ["onnxruntime"],
                               {**TINY, "onnx_converters": ["keras_r3d", "tf2onnx"]}, rows.append)
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert [benchmark_report.series_label(row) for row in rows] == [
        "ONNX Runtime (keras_r3d ONNX) float32", "ONNX Runtime (tf2onnx ONNX) float32"]
    transposes = [row["onnxruntime_op_time"].get("Transpose", [0, 0])[1] for row in rows]
    assert transposes[0] <= 1 < transposes[1], transposes  # the writer transposes the input only
    section = "\n".join(benchmark_report._op_time_section(rows, "onnxruntime"))
    for converter in ("keras_r3d", "tf2onnx"):
        assert f"- **SqueezeNet-1.1**, {converter} ONNX: " in section


def test_keras_rows_with_batch_norm_folded():
    """--batch_norm=separate,folded times the model as built and folded."""
    rows = []
    benchmark.measure_keras("ShuffleNetV2-0.25x", {**TINY, "batch_norm": ["separate", "folded"]},
                            rows.append)
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert [row.get("batch_norm") for row in rows] == [None, "folded"]
    assert benchmark_report.series_label(rows[1]) == "Keras (tensorflow, BN folded) float32"


def _official_stand_in(folder):
    """A stand-in checkout with the official ShuffleNetV2 constructor signature."""
    (folder / "models").mkdir()
    (folder / "models" / "shufflenetv2.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        class ShuffleNetV2(nn.Module):
            def __init__(self, num_classes=600, sample_size=112, width_mult=1.0):
                super().__init__()
                self.conv = nn.Conv3d(3, 4, 3, padding=1)
                self.fc = nn.Linear(4, num_classes)

            def forward(self, x):
                return self.fc(self.conv(x).mean(dim=(2, 3, 4)))
        """))


def test_official_repo_is_imported_from_the_path(tmp_path):
    _official_stand_in(tmp_path)
    rows = []
    settings = {**TINY, "official_repo": str(tmp_path), "official_modes": ["eager"],
                "precisions": ["float32", "int8"], "official_memory_formats": ["contiguous", "channels_last_3d"]}
    benchmark.measure_official("ShuffleNetV2-0.25x", settings, rows.append)
    assert [(r["runtime"], r["precision"], r["channels_last_3d"], r["status"].split(":")[0]) for r in rows] == [
        ("official-eager", "float32", False, "ok"), ("official-eager", "int8", False, "not applicable"),
        ("official-eager", "float32", True, "ok"), ("official-eager", "int8", True, "not applicable")]
    assert [benchmark_report.series_label(row) for row in rows[::2]] == [
        "official PyTorch eager float32", "official PyTorch eager (channels_last_3d) float32"]
    model = benchmark.build_official(str(tmp_path), "ShuffleNetV2-0.25x", 7, (8, 32, 32, 3))
    assert model.fc.out_features == 7
    with pytest.raises(FileNotFoundError, match="models/mobilenet.py"):
        benchmark.build_official(str(tmp_path), "MobileNetV1-1.0x", 7, (8, 32, 32, 3))
    # Code that does not build the model (another version of it, say): error rows, and the run goes on.
    (tmp_path / "models" / "mobilenet.py").write_text("import torch\n")
    rows.clear()
    benchmark.measure_official("MobileNetV1-1.0x", {**settings, "precisions": ["float32"]}, rows.append)
    assert [row["status"] for row in rows] == ["error: official model: AttributeError: module "
                                               "'official_efficient3dcnns_mobilenet' has no attribute 'MobileNet'"] * 2


def test_official_rows_follow_each_models_own_rows(tmp_path):
    """Both sides of a comparison run back to back, model by model."""
    _official_stand_in(tmp_path)
    command = [sys.executable, "-m", "keras_r3d.benchmark", "--models=ShuffleNetV2-0.25x,ShuffleNetV2-1.0x",
               "--runtimes=onnxruntime", "--input_shape=8,32,32", "--batch_sizes=1", "--warmup=0",
               "--warmup_s=0", "--repeats=2", "--rounds=2", "--num_classes=5", f"--official_repo={tmp_path}",
               "--official_modes=eager", f"--output_dir={tmp_path}", "--tag=order"]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "order.json").read_text())
    assert [(row["model"], row["runtime"], row["status"]) for row in results["results"]] == [
        ("ShuffleNetV2-0.25x", "onnxruntime", "ok"), ("ShuffleNetV2-0.25x", "official-eager", "ok"),
        ("ShuffleNetV2-1.0x", "onnxruntime", "ok"), ("ShuffleNetV2-1.0x", "official-eager", "ok")]
    assert all(row["rounds"] == 2 and row["repeats"] == 2 and "latencies_s" not in row
               for row in results["results"])
    assert "2 timed calls per cell in 2 rounds that alternate a model's cells" in (
        tmp_path / "order.md").read_text()


def test_rss_added_is_the_peak_less_the_rss_before_the_build(monkeypatch):
    monkeypatch.setattr(benchmark, "_proc_status_mib", lambda field: {"VmRSS": 100.0}[field])
    rows = []
    add = benchmark.with_rss_added(rows.append)
    add({"peak_rss_mib": 350.0, "peak_rss_scope": "measurement"})
    add({"peak_rss_mib": 350.0, "peak_rss_scope": "process"})  # a lifetime peak says nothing of this model
    add({"status": "error: x"})
    assert [row.get("rss_added_mib") for row in rows] == [250.0, None, None]
    # The RSS before the model was built, not the RSS when its rows come back (the model's own share).
    resident = {"VmRSS": 100.0}
    monkeypatch.setattr(benchmark, "_proc_status_mib", resident.get)
    rows.clear()
    add = benchmark.with_rss_added(rows.append)
    resident["VmRSS"] = 300.0  # the model is built and measured
    add({"peak_rss_mib": 350.0, "peak_rss_scope": "measurement"})
    assert rows[0]["rss_added_mib"] == 250.0


def test_rounds_alternate_the_cells_of_a_model(monkeypatch):
    calls = []

    def fake(side, latency):
        def measure(name, settings, on_row, *runtimes):
            calls.append((name, side, settings["repeats"]))
            status = "error: lost" if (side, len(calls)) == ("official", 6) else "ok"
            on_row({"model": name, "runtime": side, "precision": "float32", "batch_size": 2, "status": status,
                    "latencies_s": [latency] * settings["repeats"], "peak_rss_mib": [3, 9, 4][len(calls) // 2 % 3],
                    "compile_s": len(calls)})
        return measure

    monkeypatch.setattr(benchmark, "measure_exported",
                        lambda name, runtimes, settings, on_row: fake("onnx", 0.1)(name, settings, on_row))
    monkeypatch.setattr(benchmark, "measure_official", fake("official", 0.2))
    rows = []
    benchmark.run_share(["onnxruntime"], {"models": ["A", "B"], "repeats": 5, "rounds": 3}, rows.append,
                        official=True)
    # Each model's cells take turns, 2 of the 5 timed calls a round (rounded up).
    assert calls == [(m, side, 2) for m in "AB" for _ in range(3) for side in ("onnx", "official")]
    a_onnx, a_official, b_onnx, b_official = rows
    # The largest peak of the rounds (not the last), the first round's compile time.
    assert a_onnx["repeats"] == 6 and a_onnx["rounds"] == 3 and a_onnx["peak_rss_mib"] == 9
    assert a_onnx["compile_s"] == 1
    assert a_onnx["clips_per_s"]["median"] == pytest.approx(20.0) and "latencies_s" not in a_onnx
    assert a_official["status"] == "error: lost"  # a failed round fails the cell
    assert b_official["status"] == "ok" and b_official["clips_per_s"]["median"] == pytest.approx(10.0)


def test_merged_rounds_keep_the_largest_peaks_of_every_kind():
    rounds = [{"model": "A", "runtime": "keras", "precision": "float32", "batch_size": 1, "status": "ok",
               "latencies_s": [0.1], "peak_rss_mib": rss, "rss_added_mib": added, "gpu_peak_mib": gpu}
              for rss, added, gpu in ((500.0, 40.0, 700.0), (400.0, 90.0, 900.0), (450.0, 60.0, 800.0))]
    [row] = benchmark.merge_rounds(rounds)
    assert (row["peak_rss_mib"], row["rss_added_mib"], row["gpu_peak_mib"]) == (500.0, 90.0, 900.0)


def test_merged_rounds_never_mix_two_cells():
    # Two rounds of cells that differ in one setting each: each cell merged with itself only.
    base = {"model": "A", "runtime": "official-eager", "precision": "float32", "batch_size": 1, "status": "ok"}
    variants = [{"model": "B"}, {"runtime": "keras"}, {"precision": "bfloat16"}, {"batch_size": 8},
                {"jit_compile": True}, {"layers": "s2d"}, {"batch_norm": "folded"}, {"onnx_converter": "tf2onnx"},
                {"channels_last_3d": True}]
    rows = [{**base, **variant, "latencies_s": [latency]} for _ in range(2)
            for variant, latency in [({}, 0.5)] + [(variant, 0.1) for variant in variants]]
    merged = benchmark.merge_rounds(rows)
    assert len(merged) == 1 + len(variants) and all(row["rounds"] == 2 for row in merged)
    assert merged[0]["clips_per_s"]["median"] == pytest.approx(2.0)  # the base cell's own calls only
    assert "rounds" not in benchmark.merge_rounds([rows[0]])[0]  # a single round says nothing of rounds


def test_a_worker_that_dies_leaves_an_error_row_for_each_cell_it_did_not_measure(tmp_path, monkeypatch):
    def killed_after_one_row(settings_path, output_path, backend):
        assert json.loads(settings_path.read_text())["runtimes"] == ["keras"]
        output_path.write_text(json.dumps([{"model": "A", "runtime": "keras", "backend": backend,
                                            "precision": "float32", "batch_size": 1, "status": "ok"}]))
        return -9

    monkeypatch.setattr(benchmark, "_run_worker_process", killed_after_one_row)
    settings = {"models": ["A", "B"], "backends": ["tensorflow", "jax"], "runtimes": ["keras", "tflite"],
                "precisions": ["float32"], "batch_sizes": [1, 8], "official_repo": "r"}
    rows = []
    benchmark.run_worker("jax", ["keras"], settings, tmp_path, rows.append)
    died = "error: the jax worker exited with code -9"
    assert [(row["model"], row["backend"], row["batch_size"], row["status"]) for row in rows] == [
        ("A", "jax", 1, "ok"), ("A", "jax", 8, died), ("B", "jax", 1, died), ("B", "jax", 8, died)]


def test_a_dead_workers_exported_rows_are_labelled_by_their_runtime(tmp_path, monkeypatch):
    # An exported row's backend is its engine, never the worker's Keras backend.
    monkeypatch.setattr(benchmark, "_run_worker_process", lambda settings_path, output_path, backend: 1)
    settings = {"models": ["A"], "backends": ["jax"], "runtimes": ["tflite", "onnxruntime"],
                "precisions": ["float32"], "batch_sizes": [1], "official_repo": None}
    rows = []
    benchmark.run_worker("tensorflow", ["tflite", "onnxruntime"], settings, tmp_path, rows.append)
    assert [(row["runtime"], row["backend"]) for row in rows] == [("tflite", "tflite"), ("onnxruntime", "onnxruntime")]
    assert [benchmark_report.series_label(row) for row in rows] == ["TFLite float32", "ONNX Runtime float32"]


def test_a_facts_worker_that_dies_stops_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "_run_worker_process", lambda settings_path, output_path, backend: -9)
    with pytest.raises(benchmark.CannotStart, match="the worker that builds the models exited with code -9"):
        benchmark.facts_in_worker({"models": ["A"]}, tmp_path, "tensorflow")

    def refusing(settings_path, output_path, backend):
        assert json.loads(settings_path.read_text())["facts_only"]
        output_path.write_text(json.dumps({"facts": {}, "refused": {"A": "frames must be square",
                                                                     "B": "too small"}}))
        return 0

    monkeypatch.setattr(benchmark, "_run_worker_process", refusing)
    with pytest.raises(benchmark.CannotStart, match="^A: frames must be square; B: too small$"):
        benchmark.facts_in_worker({"models": ["A", "B"]}, tmp_path, "tensorflow")


def test_model_groups():
    efficient = benchmark.resolve_models("efficient")
    assert len(efficient) == 16 and "ShuffleNetV2-0.5x" not in efficient  # no Table 8 row
    assert benchmark.resolve_models("1.0x") == [
        "ShuffleNetV1-1.0x", "ShuffleNetV2-1.0x", "MobileNetV1-1.0x", "MobileNetV2-1.0x"]
    assert len(benchmark.resolve_models("all")) == 21
    # A model named twice (or by a group too) is measured once, where first named.
    assert benchmark.resolve_models("C3D,1.0x,C3D,ShuffleNetV2-1.0x") == [
        "C3D", "ShuffleNetV1-1.0x", "ShuffleNetV2-1.0x", "MobileNetV1-1.0x", "MobileNetV2-1.0x"]
    with pytest.raises(ValueError, match="Valid names: .*; or a group: all, efficient, 1.0x$"):
        benchmark.resolve_models("ShuffleNetV3")


def test_cpu_model_names_the_generation_behind_a_masked_name():
    # A VM's bare "AMD EPYC" was two CPU generations whose clips/s differed 3x.
    zen5 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
            "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16\n"
            "processor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n")
    assert benchmark.cpu_model(zen5) == "AMD EPYC (family 26, model 2, avx2 avx512f avx512_vnni avx512_bf16)"
    old = "model name\t: Some CPU\nflags\t\t: fpu sse2\n"
    assert benchmark.cpu_model(old) == "Some CPU (no AVX2)"
    assert benchmark.cpu_model("processor\t: 0\n")  # no model name: the platform's


def test_a_run_records_the_versions_that_made_it():
    import platform

    import keras

    import keras_r3d

    versions = benchmark.library_versions()
    assert versions["python"] == platform.python_version() and versions["keras"] == keras.__version__
    assert versions["keras_r3d"] == keras_r3d.__version__  # ours, whichever checkout ran


def test_a_run_records_whether_its_code_had_uncommitted_changes(monkeypatch):
    for porcelain, commit in ((" M keras_r3d/layers.py\n", "abc123+uncommitted"), ("", "abc123")):
        monkeypatch.setattr(benchmark.subprocess, "run", lambda command, out=porcelain, **kwargs: types.SimpleNamespace(
            stdout="abc123\n" if "rev-parse" in command else out))
        assert benchmark.git_commit() == commit


def test_time_runner_warms_up_for_calls_and_seconds():
    calls = []
    stats = benchmark.time_runner(lambda: calls.append(time.perf_counter()), lambda y: y, warmup=2,
                                  repeats=3, batch_size=1, warmup_s=0.2)
    assert stats["repeats"] == 3 and len(calls) > 1 + 2 + 3  # instant calls: many in 0.2 s
    assert calls[-3] - calls[1] >= 0.2  # first warmup call to first timed call


def test_peak_rss_is_the_measurements_only_where_the_kernel_reset_it(monkeypatch):
    # A lifetime peak (no reset) must not pass for this measurement's: with_rss_added reads the scope.
    for reset, scope in ((True, "measurement"), (False, "process")):
        monkeypatch.setattr(benchmark, "reset_peak_rss", lambda: reset)
        stats = benchmark.time_runner(lambda: None, lambda y: y, warmup=0, repeats=1, batch_size=1)
        assert stats["peak_rss_scope"] == scope and stats["peak_rss_mib"] > 0


def test_a_failed_measurement_is_a_row_and_the_run_goes_on():
    def make_runner(batch):
        if batch == 8:
            raise RuntimeError("out of memory")

        def call():
            return batch
        call.facts = {"xla_flops_per_clip": 5.0}  # what the runner learnt on its first call (JAX)
        return call, (lambda y: y), None

    rows = []
    benchmark.measure({"model": "A"}, [1, 8, 2], make_runner, {"warmup": 0, "repeats": 1, "warmup_s": 0.0},
                      rows.append)
    assert [(row["batch_size"], row["status"]) for row in rows] == [
        (1, "ok"), (8, "error: RuntimeError: out of memory"), (2, "ok")]
    assert rows[0]["xla_flops_per_clip"] == 5.0 and "xla_flops_per_clip" not in rows[1]


def test_default_tag_is_a_valid_tag_on_a_gpu_machine(monkeypatch):
    monkeypatch.setattr(benchmark, "gpu_names", lambda: ["NVIDIA H200 NVL, 143771 MiB"])
    assert re.fullmatch(r"NVIDIA-H200-NVL-\d{8}-\d{6}", benchmark.default_tag())  # main refuses spaces and commas


def test_memory_figures_are_mebibytes():
    import resource

    pages = int(pathlib.Path("/proc/self/statm").read_text().split()[1])
    assert benchmark._proc_status_mib("VmRSS") == pytest.approx(pages * resource.getpagesize() / 2**20, rel=0.005)


def test_summarize_and_process_plan():
    stats = benchmark.summarize([0.1, 0.2, 0.4], batch_size=8)
    assert stats["clips_per_s"] == {"median": 40.0, "min": 20.0, "max": 80.0}
    even = benchmark.summarize([0.1, 0.3], batch_size=8)  # clips/s and p50 agree for an even count too
    assert even["clips_per_s"]["median"] == pytest.approx(8 / 0.2) and even["latency_ms"]["p50"] == pytest.approx(200)
    assert stats["latency_ms"]["p50"] == pytest.approx(200.0)
    assert stats["latency_ms"]["p99"] == pytest.approx(np.percentile([100, 200, 400], 99))
    assert benchmark.plan_processes(["jax", "torch"], ["keras", "tflite", "onnxruntime"]) == {
        "jax": ["keras"], "torch": ["keras"], "tensorflow": ["tflite", "onnxruntime"]}
    assert benchmark.parse_input_shape("16,112,112") == (16, 112, 112, 3)


def _row(model, runtime, cps, precision="float32", batch=1, backend="torch"):
    return {"model": model, "runtime": runtime, "backend": backend, "precision": precision,
            "batch_size": batch, "status": "ok", "clips_per_s": {"median": cps, "min": cps, "max": cps},
            "latency_ms": {"p50": 1e3 / cps, "p99": 1e3 / cps}, "peak_rss_mib": 1.0,
            "compile_s": 1.0, "load_1min": 0.1}


def test_markdown_reports_the_cpu_target(tmp_path):
    paper = {"params_M": 1.91, "mflops": 195, "titan_xp_cps": 243, "jetson_tx2_cps": 44}
    results = {
        "run": {"tag": "t", "command": "c", "cpu_model": "cpu", "cpu_cores": 2, "gpus": [],
                "started_utc": "s", "finished_utc": "f", "versions": {"keras": "3"},
                "load_1min_before": 3.5, "load_1min_after": 0.2, "git_commit": "x",
                "settings": {**TINY, "input_shape": [16, 112, 112, 3], "models": ["A", "B"],
                             "backends": ["tensorflow"], "runtimes": ["tflite", "onnxruntime"],
                             "precisions": ["float32", "int8"], "official_repo": "r"}},
        "models": {"A": {"params_M": 1.9, "mflops": 195.0, "paper": paper},
                   "B": {"params_M": 1.9, "mflops": 195.0, "paper": paper}},
        "results": [_row("A", "official-eager", 30.0), _row("A", "official-compile", 40.0),
                    _row("A", "tflite", 150.0, "int8", backend="tflite"),
                    _row("B", "official-eager", 30.0),
                    {**_row("B", "onnxruntime", 60.0, backend="onnxruntime"),
                     "clips_per_s": {"median": 60.0, "min": 30.0, "max": 90.0},
                     "latency_ms": {"p50": 16.5, "p99": 40.0}},
                    {**_row("B", "tflite", 1.0, backend="tflite"), "status": "error: boom"}],
    }
    markdown = benchmark_report.render_markdown(results)
    assert "| A | TFLite int8 | 150.0 | not measured | — | official PyTorch torch.compile float32 " \
           "| 40.0 | 3.75× | yes |" in markdown
    assert "| B | ONNX Runtime float32 | 60.0 |" in markdown and "| 2.00× | **no** |" in markdown
    assert "| 60.0 [30.0–90.0] | 16.50 | 40.00 |" in markdown  # median [min–max] clips/s, p50 and p99 ms
    assert "shared and busy" in markdown  # load 3.5 on 2 cores, 2 of it the benchmark's threads
    results["run"]["load_1min_before"] = 2.2  # the benchmark's own two threads, and a little more
    assert "busy" not in benchmark_report.render_markdown(results)
    assert "| 1.91 / 1.90 | 195 / 195 | 243 | 44 |" in markdown
    assert "error: boom" in markdown
    assert "Unfinished" not in markdown and "ratios may differ" in markdown

    del results["run"]["finished_utc"]  # a run stopped early, rendered again from its JSON
    (tmp_path / "t.json").write_text(json.dumps(results))
    benchmark_report.rerender(tmp_path / "t.json")
    assert ("**Unfinished run**: it was stopped after 6 measurements; 10 more were asked for (tflite: A, B; "
            "onnxruntime: A, B; official-eager: A, B; official-compile: A, B)") in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t.png").read_bytes().startswith(b"\x89PNG")
    del results["results"][0]["clips_per_s"]  # edited by hand
    (tmp_path / "t.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"t.json: an incomplete results JSON \(KeyError: 'clips_per_s'\)"):
        benchmark_report.rerender(tmp_path / "t.json")


def _results(models, rows, input_shape=(16, 112, 112, 3), num_classes=600, **run):
    """A finished run's results JSON of `models` ({name: facts}) and `rows`, on an idle 2-core machine."""
    return {"run": {"tag": "t", "command": "python -m keras_r3d.benchmark --models=A,B", "cpu_model": "cpu",
                    "cpu_cores": 2, "gpus": [], "started_utc": "s", "finished_utc": "f", "device": "CPU",
                    "versions": {"keras": "3.9", "keras_r3d": "0.4"}, "load_1min_before": 0.1,
                    "load_1min_after": 0.1, "git_commit": "abc",
                    "settings": {**TINY, "input_shape": list(input_shape), "num_classes": num_classes,
                                 "models": list(models), "backends": ["tensorflow"], "runtimes": ["tflite"],
                                 "official_repo": "r"}, **run},
            "models": models, "results": rows}


def test_markdown_puts_each_models_paper_figures_beside_its_own():
    models = {"A": {"params_M": 1.90, "mflops": 200.0,
                    "paper": {"params_M": 1.91, "mflops": 195, "titan_xp_cps": 243, "jetson_tx2_cps": 44}},
              "B": {"params_M": 0.80, "mflops": 35.0,
                    "paper": {"params_M": 0.83, "mflops": 30, "titan_xp_cps": 442, "jetson_tx2_cps": 84}}}
    markdown = benchmark_report.render_markdown(_results(models, [_row("A", "tflite", 9.0), _row("B", "tflite", 7.0)]))
    assert "| A | 1.91 / 1.90 | 195 / 200 | 243 | 44 | 9.0 [9.0–9.0] |" in markdown  # paper / ours
    assert "| B | 0.83 / 0.80 | 30 / 35 | 442 | 84 | 7.0 [7.0–7.0] |" in markdown


def test_markdown_records_how_where_and_with_what_the_run_was_made():
    paper = {"params_M": 1.91, "mflops": 195, "titan_xp_cps": 243, "jetson_tx2_cps": 44}
    models = {"A": {"params_M": 1.9, "mflops": 195.0, "paper": paper}}
    markdown = benchmark_report.render_markdown(_results(models, [_row("A", "tflite", 9.0)]))
    assert "- Command: `python -m keras_r3d.benchmark --models=A,B`\n" in markdown
    assert "- Machine: cpu, 2 CPU cores; GPU: none; measured on: CPU\n" in markdown
    assert "- Started s, finished f; git abc\n" in markdown
    assert "- Versions: keras 3.9, keras_r3d 0.4\n" in markdown


def test_markdown_says_when_the_setting_is_not_table_8s():
    paper = {"params_M": 1.91, "mflops": 195, "titan_xp_cps": 243, "jetson_tx2_cps": 44}
    models, rows = {"A": {"params_M": 1.9, "mflops": 195.0, "paper": paper}}, [_row("A", "tflite", 9.0)]
    warning = "**Not Table 8's setting** (16×112×112 clips, 600 classes)"
    assert warning not in benchmark_report.render_markdown(_results(models, rows))
    assert warning in benchmark_report.render_markdown(_results(models, rows, num_classes=101))  # UCF-101's head
    assert warning in benchmark_report.render_markdown(_results(models, rows, input_shape=(16, 112, 128, 3)))


def test_markdown_says_the_machine_was_busy_when_it_was_during_a_row():
    paper = {"params_M": 1.91, "mflops": 195, "titan_xp_cps": 243, "jetson_tx2_cps": 44}
    models = {"A": {"params_M": 1.9, "mflops": 195.0, "paper": paper}}
    rows = [_row("A", "tflite", 9.0), {**_row("A", "official-eager", 3.0), "load_1min": 4.0}]  # idle before and after
    markdown = benchmark_report.render_markdown(_results(models, rows))
    assert "shared and busy** (1-minute load up to 4.00 on 2 cores" in markdown and "ratios may differ" in markdown


def test_cpu_target_compares_batch_1_only_and_is_met_at_exactly_3x():
    paper = {"params_M": 1.91, "mflops": 195, "titan_xp_cps": 243, "jetson_tx2_cps": 44}
    models = {name: {"params_M": 1.9, "mflops": 195.0, "paper": paper} for name in ("A", "B")}
    rows = [_row("A", "official-eager", 30.0), _row("A", "tflite", 60.0, backend="tflite"),
            _row("A", "tflite", 400.0, batch=8, backend="tflite"),  # batch 8: not the target's protocol
            _row("A", "official-eager", 10.0, batch=8),
            _row("B", "official-eager", 20.0), _row("B", "tflite", 60.0, backend="tflite")]
    markdown = benchmark_report.render_markdown(_results(models, rows))
    assert "| A | TFLite float32 | 60.0 | not measured | — | official PyTorch eager float32 | 30.0 | 2.00× " \
           "| **no** |" in markdown
    assert "| B | TFLite float32 | 60.0 | not measured | — | official PyTorch eager float32 | 20.0 | 3.00× | yes |" \
        in markdown  # ≥ 3×


def test_rerender_names_a_json_cut_or_edited_by_hand(tmp_path):
    paper = {"params_M": 1.91, "mflops": 195, "titan_xp_cps": 243, "jetson_tx2_cps": 44}
    good = _results({"A": {"params_M": 1.9, "mflops": 195.0, "paper": paper}}, [_row("A", "tflite", 9.0)])
    for edit, error in (({"results": None}, "TypeError"), ({"models": ["A"]}, "AttributeError")):
        (tmp_path / "t.json").write_text(json.dumps({**good, **edit}))
        with pytest.raises(ValueError, match=rf"t.json: an incomplete results JSON \({error}: "):
            benchmark_report.rerender(tmp_path / "t.json")
    assert not (tmp_path / "t.md").exists()


def test_slow_rows_keep_two_digits_and_the_paper_points_stay_at_the_papers_mflops(monkeypatch, tmp_path):
    from matplotlib import pyplot

    paper = {"params_M": 1.91, "mflops": 195, "titan_xp_cps": 243, "jetson_tx2_cps": 44}
    results = {
        "run": {"tag": "t", "command": "c", "cpu_model": "cpu", "cpu_cores": 2, "gpus": [],
                "started_utc": "s", "finished_utc": "f", "versions": {"keras": "3"},
                "load_1min_before": 0.1, "load_1min_after": 0.2, "git_commit": "x",
                "settings": {**TINY, "input_shape": [8, 32, 32, 3], "models": ["A"], "backends": ["torch"],
                             "runtimes": ["keras"], "precisions": ["float32"]}},
        "models": {"A": {"params_M": 1.9, "mflops": 9.0, "paper": paper}},
        "results": [_row("A", "keras", 0.0123)],
    }
    assert "| 0.012 [0.012–0.012] |" in benchmark_report.render_markdown(results)
    monkeypatch.setattr(pyplot, "close", lambda figure: None)
    benchmark_report.plot_speed(results, tmp_path / "t.png")
    lines = {line.get_label(): line.get_xydata().tolist() for line in pyplot.gcf().axes[0].lines}
    pyplot.close("all")
    assert lines["paper: Titan XP b8, 16×112×112"] == [[195, 243]]
    assert lines["Keras (torch) float32 b1"] == [[9.0, 0.0123]]


def test_markdown_reports_the_gpu_targets():
    paper = {"params_M": 1.3, "mflops": 360, "titan_xp_cps": 0, "jetson_tx2_cps": 0}
    gpu = {"gpu_peak_mib": 100.0}
    results = {
        "run": {"tag": "t", "command": "c", "cpu_model": "cpu", "cpu_cores": 16, "gpus": ["G"],
                "started_utc": "s", "finished_utc": "f", "versions": {}, "load_1min_before": 0.1,
                "load_1min_after": 0.1, "gpu_copy_gb_per_s": 4000.0,
                "settings": {**TINY, "input_shape": [16, 112, 112, 3]}},
        "models": {"ShuffleNetV2-1.0x": {"params_M": 1.3, "mflops": 360.0, "paper": paper,
                                         "conv_pool_io_elements": 5_000_000},
                   "SqueezeNet-1.1": {"params_M": 1.3, "mflops": 360.0, "paper": paper,
                                      "conv_pool_io_elements": 5_000_000}},
        "results": [
            {**_row("ShuffleNetV2-1.0x", "keras", 6000.0, batch=8, backend="jax"), **gpu},
            {**_row("ShuffleNetV2-1.0x", "official-compile", 3000.0, batch=8), **gpu},
            {**_row("ShuffleNetV2-1.0x", "keras", 80000.0, "bfloat16", 256, "jax"), **gpu},
            {**_row("ShuffleNetV2-1.0x", "official-compile", 50000.0, "bfloat16", 256), **gpu},
            {**_row("SqueezeNet-1.1", "keras", 900.0, batch=8, backend="jax"), **gpu},
            {**_row("SqueezeNet-1.1", "official-compile", 1000.0, batch=8), **gpu},
        ],
    }
    markdown = benchmark_report.render_markdown(results)
    # Efficient model: 2x >= 1.5x at batch 8; 1.6x < 2x at batch 256; bound 4e12 / 1e7 B.
    assert "| 2.00× | yes (≥ 1.5×) |" in markdown and "| 1.60× | **no** (≥ 2.0×) |" in markdown
    assert "| 400,000 (10.0 MB/clip, bfloat16) | 20% (**< 30%**) |" in markdown
    # Dense model: parity is its batch-8 target; no large-batch rows.
    assert "| 0.90× | **no** (≥ 1.0×) | — | — | — | not measured |" in markdown
    assert "4,000 GB/s" in markdown


def test_gpu_targets_take_float32_at_batch_8_and_batch_64_as_large():
    paper = {"params_M": 1.3, "mflops": 360, "titan_xp_cps": 0, "jetson_tx2_cps": 0}
    gpu = {"gpu_peak_mib": 100.0}
    models = {"ShuffleNetV2-1.0x": {"params_M": 1.3, "mflops": 360.0, "paper": paper}}
    rows = [{**_row("ShuffleNetV2-1.0x", "keras", 3000.0, batch=8, backend="jax"), **gpu},
            {**_row("ShuffleNetV2-1.0x", "keras", 9000.0, "bfloat16", 8, "jax"), **gpu},  # not the paper's protocol
            {**_row("ShuffleNetV2-1.0x", "official-compile", 2000.0, batch=8), **gpu},
            {**_row("ShuffleNetV2-1.0x", "keras", 8000.0, batch=64, backend="jax"), **gpu},
            {**_row("ShuffleNetV2-1.0x", "official-compile", 4000.0, batch=64), **gpu}]
    markdown = benchmark_report.render_markdown(_results(models, rows, gpus=["G"]))
    assert "| ShuffleNetV2-1.0x | 3,000 (Keras (jax) float32 b8) | 2,000 (official PyTorch torch.compile float32 b8) " \
           "| 1.50× | yes (≥ 1.5×) | 8,000 (Keras (jax) float32 b64) " \
           "| 4,000 (official PyTorch torch.compile float32 b64) | 2.00× | yes (≥ 2.0×) |" in markdown


def test_layer_profile_names_the_bounding_layers():
    import keras

    from keras_r3d import layers as r3d_layers

    inputs = keras.Input((4, 8, 8, 6))
    x = r3d_layers.Conv3D(6, 3, padding=1, groups=6, name="dw")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = r3d_layers.Conv3D(12, 1, groups=3, name="gconv")(x)
    outputs = r3d_layers.Conv3D(4, 1, name="pw")(x)
    rows = benchmark.profile_layers(keras.Model(inputs, outputs), batch_size=1, repeats=2)
    assert {row["layer"]: row["kind"] for row in rows} == {
        "dw": "conv depthwise 3x3x3", "bn": "BatchNormalization", "gconv": "conv grouped 1x1x1",
        "pw": "conv 1x1x1"}
    assert all(row["ms"] >= 0 for row in rows)
    assert [row["ms"] for row in rows] == sorted((row["ms"] for row in rows), reverse=True)
    fake = [{"layer": "a", "kind": "conv", "output_shape": [1], "ms": 3.0},
            {"layer": "b", "kind": "BN", "output_shape": [1], "ms": 1.0},
            {"layer": "c", "kind": "conv", "output_shape": [1], "ms": 1.0}]
    assert benchmark_report.profile_by_kind(fake) == {"conv": (4.0, 2), "BN": (1.0, 1)}
    section = "\n".join(benchmark_report._profile_section({"Net": fake}))
    assert "**Net** (5 ms summed): conv 80% (2), BN 20% (1). Slowest: `a` conv [1] 3.0 ms" in section


def test_gpu_peak_memory_says_when_it_is_the_process_peak():
    """JAX cannot reset its device peak: its rows say the peak is the process's."""
    from keras_r3d import benchmark

    resets = []
    torch_like = benchmark._GpuMemory(lambda: resets.append(1), lambda: 3 * 2**20)
    torch_like.reset()
    assert (torch_like.scope, resets, torch_like.peak_mib()) == ("measurement", [1], 3.0)
    jax_like = benchmark._GpuMemory(None, lambda: 5 * 2**20)
    jax_like.reset()
    assert (jax_like.scope, jax_like.peak_mib()) == ("process", 5.0)


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") == "jax", reason="pallas runs there")
def test_pallas_layers_are_not_applicable_off_jax():
    rows = []
    benchmark.measure_keras("ShuffleNetV2-0.25x", {**TINY, "layers": ["pallas", "s2d"]}, rows.append)
    assert [(r["layers"], r["status"].split(":")[0]) for r in rows] == [("pallas", "not applicable"),
                                                                        ("s2d", "ok")]


@pytest.mark.skipif(benchmark.cpu_count() < 2, reason="needs 2 or more usable CPUs")
def test_jax_rows_run_on_the_given_number_of_threads(tmp_path):
    """JAX has no thread setting: its rows run in a worker pinned to --threads CPUs."""
    assert benchmark.pins_jax("jax", 1) and not benchmark.pins_jax("tensorflow", 1)
    command = [sys.executable, "-m", "keras_r3d.benchmark", "--models=ShuffleNetV2-0.25x", "--backends=jax",
               "--runtimes=keras", "--input_shape=8,32,32", "--batch_sizes=1", "--warmup=0", "--repeats=1",
               "--num_classes=5", "--threads=1", f"--output_dir={tmp_path}", "--tag=one", "--overwrite"]
    for backend in ("tensorflow", "jax"):  # the main process's own backend, or another
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "KERAS_BACKEND": backend})
        assert done.returncode == 0, done.stderr[-2000:]
        [row] = json.loads((tmp_path / "one.json").read_text())["results"]
        assert (row["backend"], row["status"], row["usable_cpus"]) == ("jax", "ok", 1), backend
