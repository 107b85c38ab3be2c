"""tfrecords_tools.benchmark: the pipeline measurement and its report, on a
tiny synthetic set. No timing is asserted."""
import pytest

from keras_r3d.preprocessing import Preprocessing
from tfrecords_tools import benchmark, synthetic

CONTRACT = Preprocessing(frames=8, size=32)


def test_pipeline_reports_median_and_range_of_its_windows(tmp_path):
    config = synthetic.SyntheticConfig(videos_per_class=1, size=32, frames=16, shards=1, val_fraction=0.5)
    folder = tmp_path / "set [v1]"  # the shard glob takes the folder literally, as training does
    synthetic.make_synthetic(folder, config, workers=1, progress=False)
    result = benchmark.pipeline(str(folder / "*-*.tfrecord"), seconds=0.2, repeats=3, profile=False)
    rates = sorted(window["clips_per_s"] for window in result["windows"])
    assert len(rates) == 3 and result["clips_per_s_range"] == [rates[0], rates[-1]]
    assert result["clips_per_s"] == rates[1] and result["cpu_ms_per_clip"] > 0
    stages = benchmark.stage_profile(str(folder / "train-*.tfrecord"), CONTRACT, seconds=0.1)
    assert list(stages["stage_cpu_ms_per_clip"]) == ["read_parse", "decode_16_crops", "resize",
                                                     "normalize_batch_shuffle_overhead"]
    assert all(ms > 0 for ms in stages["cumulative_cpu_ms_per_clip"].values())

    profile = {"stage_cpu_ms_per_clip": {"read_parse": 1.0, "decode_16_crops": 2.0, "resize": 1.0,
                                         "normalize_batch_shuffle_overhead": 4.0}}
    report = {"command": "c", "date_utc": "d", "conversion": {},
              "machine": {"cpu_model": "cpu", "cores": 3, "tensorflow": "2", "load_average_1_5_15_before": [0],
                          "load_average_1_5_15_after": [0]},
              "settings": {"conversion_workers": 2, "seconds_per_measurement": 0.2, "measurements_per_pipeline": 3},
              "pipeline": {"tiny": {**result, "profile": profile}}}
    text = benchmark.markdown(report)
    assert f"| tiny | {rates[1]} [{rates[0]}–{rates[-1]}] |" in text
    assert "3 consecutive windows of 0.2 s" in text
    assert "`3 cores / CPU time` is the rate it would reach on 3 idle cores" in text  # the machine's, not 2
    assert "the largest stage is `normalize_batch_shuffle_overhead` (50% of the CPU time)" in text


def test_an_unwritable_output_or_missing_fixtures_are_one_line_errors_before_the_work(tmp_path, monkeypatch, capsys):
    assert benchmark.main(["--output_dir", "/proc/pipeline"]) == 1
    assert "error: --output_dir /proc/pipeline: cannot write there (" in capsys.readouterr().err
    monkeypatch.setattr(benchmark, "FIXTURES", tmp_path / "absent")
    assert benchmark.main(["--output_dir", str(tmp_path)]) == 1
    assert f"error: no fixture clips under {tmp_path / 'absent' / 'clips'} (set KERAS_R3D_FIXTURES)" \
        in capsys.readouterr().err


def test_pipeline_summary_takes_the_median_cpu_time_in_milliseconds(monkeypatch):
    import os

    from keras_r3d import data

    windows = iter([{"clips_per_s": 100.0, "cpu_ms_per_clip": 10.0}, {"clips_per_s": 90.0, "cpu_ms_per_clip": 40.0},
                    {"clips_per_s": 80.0, "cpu_ms_per_clip": 16.0}])
    monkeypatch.setattr(data, "make_dataset", lambda *args, **kwargs: "dataset")
    monkeypatch.setattr(benchmark, "measure", lambda dataset, seconds, clips: next(windows))
    result = benchmark.pipeline("x-*.tfrecord", seconds=1.0, repeats=3, profile=False)
    assert (result["clips_per_s"], result["clips_per_s_range"]) == (90.0, [80.0, 100.0])
    assert result["cpu_ms_per_clip"] == 16.0  # the median window's, not the mean (22)
    # 16 ms of CPU a clip: 62.5 clips/s a core.
    assert result["cpu_bound_clips_per_s_on_idle_cores"] == round(len(os.sched_getaffinity(0)) * 62.5, 1)


def test_stage_profile_charges_each_stage_its_own_share(tmp_path, monkeypatch):
    from keras_r3d import data

    cumulative = iter([1.0, 3.0, 4.5, 8.0])  # read+parse, then +decode, +resize, the full pipeline
    monkeypatch.setattr(data, "make_dataset", lambda *args, **kwargs: "dataset")
    monkeypatch.setattr(benchmark, "measure", lambda dataset, seconds, clips: {"cpu_ms_per_clip": next(cumulative)})
    stages = benchmark.stage_profile(str(tmp_path / "train-*.tfrecord"), CONTRACT, seconds=0.1)
    assert stages["stage_cpu_ms_per_clip"] == {"read_parse": 1.0, "decode_16_crops": 2.0, "resize": 1.5,
                                               "normalize_batch_shuffle_overhead": 3.5}


def test_conversion_rates_are_per_second_of_the_conversion():
    import time

    def convert(*args, **kwargs):
        time.sleep(0.2)
        return {"splits": {"train": {"shards": [{"videos": 3, "num_frames": [100, 200, 300]}]},
                           "val": {"shards": [{"videos": 1, "num_frames": [400]}]}}, "skipped": [{"reason": "r"}]}

    result = benchmark.timed_conversion(convert)
    assert (result["videos"], result["frames"], result["skipped"]) == (4, 1000, 1)
    assert result["videos_per_s"] == pytest.approx(4 / result["seconds"], rel=0.05)
    assert result["frames_per_s"] == pytest.approx(1000 / result["seconds"], rel=0.05)


def test_a_measurement_needs_a_window_and_a_repeat(capsys):
    for args in (["--repeats", "0"], ["--seconds", "0"]):
        with pytest.raises(SystemExit) as exit_:  # before anything else is looked at
            benchmark.main(args + ["--output_dir", "/proc/pipeline"])
        assert exit_.value.code == 2 and "--repeats must be >= 1 and --seconds > 0" in capsys.readouterr().err
