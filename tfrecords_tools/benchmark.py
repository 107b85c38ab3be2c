"""Benchmark of conversion and of the training input pipeline, on this machine.

    python -m tfrecords_tools.benchmark [--output_dir benchmarks] [--seconds 20] [--repeats 3]

Converts the real fixture clips (videos and frame folders, shorter side 128)
and a synthetic set rendered at 128 px, then measures `keras_r3d.data` train
batches of 16 x 112 x 112 clips (batch 16): wall-clock clips/s, CPU time per
clip, and the CPU time of each stage (parse, decode, resize, the rest) to say
what bounds it. Also times the default synthetic set (`SyntheticConfig()`, not
the demo's) end to end. Writes `data_pipeline.json` and `data_pipeline.md`, with
the CPU model and the load average (other processes share the cores: wall
figures drop under load).
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import sys
import tempfile
import time

FIXTURES = pathlib.Path(os.environ.get("KERAS_R3D_FIXTURES",
                                       pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
CLIP = dict(frames=16, size=112, temporal_downsample=1)
BATCH = 16


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def natural_tree(root):
    """`root/<kind>/<clip>` links to every fixture video and gesture folder."""
    clips = FIXTURES / "clips"
    if not (clips / "gestures").is_dir():
        raise FileNotFoundError(f"no fixture clips under {clips} (set KERAS_R3D_FIXTURES)")
    sources = sorted(p for p in clips.glob("*/*.*") if p.suffix in (".avi", ".mp4"))
    sources += sorted(p for p in (clips / "gestures").iterdir() if p.is_dir())
    for source in sources:
        link = root / source.parent.name / source.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
    return root


def timed_conversion(function, *args, **kwargs):
    start = time.time()
    manifest = function(*args, **kwargs)
    seconds = time.time() - start
    shards = [s for entry in manifest["splits"].values() for s in entry["shards"]]
    frames = sum(sum(s["num_frames"]) for s in shards)
    return {"seconds": round(seconds, 2), "videos": sum(s["videos"] for s in shards), "frames": frames,
            "videos_per_s": round(sum(s["videos"] for s in shards) / seconds, 2),
            "frames_per_s": round(frames / seconds, 1), "skipped": len(manifest["skipped"])}


def measure(dataset, seconds, clips_per_element):
    """Wall clips/s and CPU ms per clip of an endless dataset, after warm-up."""
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    start, cpu, clips = time.time(), cpu_seconds(), 0
    while time.time() - start < seconds:
        next(iterator)
        clips += clips_per_element
    wall = time.time() - start
    return {"clips_per_s": round(clips / wall, 1), "cpu_ms_per_clip": round((cpu_seconds() - cpu) / clips * 1000, 2)}


def stage_profile(pattern, contract, seconds):
    """CPU ms per clip of the pipeline cut after each stage (1 clip at a time)."""
    import tensorflow as tf

    from keras_r3d import data
    from tfrecords_tools import schema

    videos = tf.data.TFRecordDataset(schema.glob_shards(pattern)).repeat().map(schema.parse_video)
    seed = tf.constant(0, tf.int64)

    def decode(video):
        indices = data.frame_indices(video["num_frames"], 0, contract)
        window = data.crop_window(video["height"], video["width"], seed, "random")
        images = tf.gather(video["images"], indices)
        return tf.stack([tf.image.decode_and_crop_jpeg(images[i], window, channels=3)
                         for i in range(contract.frames)])

    def resize(video):
        return tf.image.resize(decode(video), [contract.size, contract.size], "bilinear")

    stages = {"read_parse": videos, "decode_16_crops": videos.map(decode), "resize": videos.map(resize),
              "full_pipeline": data.make_dataset(pattern, "train", contract, 1, shuffle_seed=0, repeat=True,
                                                 num_parallel_calls=1)}
    cumulative = {name: measure(ds, seconds, 1)["cpu_ms_per_clip"] for name, ds in stages.items()}
    order, previous, shares = list(cumulative), 0.0, {}
    for name in order:
        shares[name if name != "full_pipeline" else "normalize_batch_shuffle_overhead"] = round(
            cumulative[name] - previous, 2)
        previous = cumulative[name]
    return {"cumulative_cpu_ms_per_clip": cumulative, "stage_cpu_ms_per_clip": shares}


def pipeline(pattern, seconds, repeats, profile=True):
    """The train pipeline's clips/s, `repeats` windows of `seconds` each
    (the rate drifts within a process by up to 25 %): median and range."""
    import statistics

    import keras_r3d
    from keras_r3d import data
    from keras_r3d.benchmark import cpu_count

    contract = keras_r3d.Preprocessing(**CLIP)
    dataset = data.make_dataset(pattern, "train", contract, BATCH, shuffle_seed=0, repeat=True)
    windows = [measure(dataset, seconds, BATCH) for _ in range(repeats)]
    rates = [w["clips_per_s"] for w in windows]
    result = {"clips_per_s": statistics.median(rates), "clips_per_s_range": [min(rates), max(rates)],
              "cpu_ms_per_clip": statistics.median(w["cpu_ms_per_clip"] for w in windows),
              "windows": windows}
    result["cpu_bound_clips_per_s_on_idle_cores"] = round(cpu_count() * 1000 / result["cpu_ms_per_clip"], 1)
    if profile:
        result["profile"] = stage_profile(pattern, contract, seconds / 2)
    return result


def keep_freed_memory():
    """glibc: serve the 2-40 MB clip and batch buffers from the heap and keep
    freed memory, instead of a fresh mmap (and its page faults) per buffer.
    Same as `MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=1073741824`."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 256 * 2**20) and libc.mallopt(m_trim_threshold, 2**30))


def run(work, seconds, workers, repeats):
    import tensorflow as tf

    from keras_r3d.benchmark import cpu_count, cpu_model
    from tfrecords_tools.convert import convert
    from tfrecords_tools.synthetic import DEFAULTS, SyntheticConfig, make_synthetic

    load_before = os.getloadavg()
    results = {"conversion": {}, "pipeline": {}}
    source = natural_tree(work / "natural_in")
    results["conversion"]["natural_fixtures"] = timed_conversion(
        convert, "folders", source, work / "natural", short_side=128, workers=workers, progress=False)
    synthetic = SyntheticConfig(size=128, videos_per_class=16)
    results["conversion"]["synthetic_128px_render_and_convert"] = timed_conversion(
        make_synthetic, work / "synthetic", synthetic, workers=workers, progress=False)
    results["conversion"]["default_synthetic_render_and_convert"] = timed_conversion(
        make_synthetic, work / "default", DEFAULTS, workers=workers, progress=False)
    results["pipeline"]["natural_fixtures"] = pipeline(str(work / "natural" / "train-*.tfrecord"), seconds,
                                                       repeats)
    results["pipeline"]["synthetic_128px"] = pipeline(str(work / "synthetic" / "train-*.tfrecord"), seconds,
                                                      repeats)
    if keep_freed_memory():
        for name, folder in (("natural_fixtures", "natural"), ("synthetic_128px", "synthetic")):
            results["pipeline"][f"{name}_glibc_malloc_tuned"] = pipeline(
                str(work / folder / "train-*.tfrecord"), seconds, repeats, profile=False)
    return {
        "what": "tfrecords_tools conversion and keras_r3d.data train pipeline throughput",
        "command": "python -m tfrecords_tools.benchmark " + " ".join(sys.argv[1:]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpu_model": cpu_model(), "cores": cpu_count(), "python": platform.python_version(),
                    "tensorflow": tf.__version__,
                    "load_average_1_5_15_before": [round(x, 2) for x in load_before],
                    "load_average_1_5_15_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"clip": CLIP, "batch": BATCH, "short_side": 128, "jpeg_quality": 90,
                     "conversion_workers": workers, "seconds_per_measurement": seconds,
                     "measurements_per_pipeline": repeats,
                     "synthetic_128px": dataclass_dict(synthetic), "default_synthetic": dataclass_dict(DEFAULTS)},
        **results,
    }


def dataclass_dict(config):
    import dataclasses

    return dataclasses.asdict(config)


def markdown(report):
    machine, conv, pipe = report["machine"], report["conversion"], report["pipeline"]
    windows = report["settings"].get("measurements_per_pipeline", 1)
    lines = [
        "# Data pipeline benchmark", "",
        f"Made by `{report['command']}` on {report['date_utc']} UTC: {machine['cpu_model']}, "
        f"{machine['cores']} cores, TensorFlow {machine['tensorflow']}. Load average (1/5/15 min) "
        f"{machine['load_average_1_5_15_before']} before and {machine['load_average_1_5_15_after']} after: "
        "other processes shared the cores, so wall-clock figures are lower bounds. The CPU time per clip is "
        f"what the pipeline itself spent; `{machine['cores']} cores / CPU time` is the rate it would reach on "
        f"{machine['cores']} idle cores.", "",
        "## Conversion", "", "| input | videos | frames | seconds | videos/s | frames/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in conv.items():
        lines.append(f"| {name} | {r['videos']} | {r['frames']} | {r['seconds']} | {r['videos_per_s']} | "
                     f"{r['frames_per_s']} |")
    lines += ["", f"Natural fixtures: the 5 fixture videos and 3 gesture frame folders, shorter side 128, JPEG 90, "
              f"{report['settings']['conversion_workers']} workers. Synthetic rows include rendering the videos.",
              "", "## Training pipeline (16 x 112 x 112, batch 16, random multiscale crop)", "",
              f"Each row: {windows} consecutive window{'s' * (windows != 1)} of "
              f"{report['settings']['seconds_per_measurement']} s; the median and the range.", "",
              "| data | wall clips/s median [min–max] | CPU ms/clip | clips/s on idle cores (CPU-bound) |",
              "| --- | ---: | ---: | ---: |"]
    for name, r in pipe.items():
        low, high = r.get("clips_per_s_range", [r["clips_per_s"]] * 2)
        lines.append(f"| {name} | {r['clips_per_s']} [{low}–{high}] | {r['cpu_ms_per_clip']} | "
                     f"{r['cpu_bound_clips_per_s_on_idle_cores']} |")
    lines += ["", "Rows ending in `_glibc_malloc_tuned`: the same pipeline, measured after `keep_freed_memory()` "
              "(glibc `mallopt`, as `MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=1073741824` in the "
              "environment), which stops a fresh mmap and its page faults for every clip and batch buffer.",
              "", "## Where the time goes (CPU ms per clip, one clip at a time)", "",
              "| stage | " + " | ".join(pipe) + " |", "| --- |" + " ---: |" * len(pipe)]
    profiled = {name: r for name, r in pipe.items() if "profile" in r}
    lines[-1] = "| --- |" + " ---: |" * len(profiled)
    lines[-2] = "| stage | " + " | ".join(profiled) + " |"
    for stage in next(iter(profiled.values()))["profile"]["stage_cpu_ms_per_clip"]:
        lines.append(f"| {stage} | " + " | ".join(
            str(r["profile"]["stage_cpu_ms_per_clip"][stage]) for r in profiled.values()) + " |")
    for name, r in profiled.items():
        shares = r["profile"]["stage_cpu_ms_per_clip"]
        top = max(shares, key=shares.get)
        lines.append(f"\n{name}: the largest stage is `{top}` "
                     f"({100 * shares[top] / sum(shares.values()):.0f}% of the CPU time).")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfrecords_tools.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="benchmarks")
    parser.add_argument("--seconds", type=float, default=20.0, help="per pipeline measurement")
    parser.add_argument("--workers", type=int, default=2, help="conversion processes")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per pipeline")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.seconds <= 0:
        parser.error("--repeats must be >= 1 and --seconds > 0")
    from keras_r3d.files import probe_writable, write_atomic

    output = pathlib.Path(args.output_dir)
    try:
        probe_writable(output, f"--output_dir {output}")  # before the minutes of work
        with tempfile.TemporaryDirectory() as work:
            report = run(pathlib.Path(work), args.seconds, args.workers, args.repeats)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    write_atomic(output / "data_pipeline.json", json.dumps(report, indent=1) + "\n")
    write_atomic(output / "data_pipeline.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
