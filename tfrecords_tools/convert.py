r"""Converts a video dataset to sharded TFRecords of JPEG frames.

    python -m tfrecords_tools.convert --format jester|ucf101|kinetics|folders \
        --input DIR --output DIR [--annotations PATH] [--split N] \
        [--shard_size_mb 200 | --num_shards N] [--workers N] [--short_side 128] \
        [--jpeg_quality 90] [--val_fraction F] [--min_frames 1] [--fps F]

Writes `{split}-{i:05d}-of-{n:05d}.tfrecord` and `manifest.json` in OUTPUT.
The plan (which video goes to which shard) is fixed in `OUTPUT/.plan.json`
before any work, so a re-run with the same arguments resumes: shards whose
completion record exists in `OUTPUT/.progress/` are kept, the rest are redone.
Shards are written under a temporary name and renamed when complete.
"""
import argparse
import collections
import dataclasses
import io
import itertools
import json
import math
import multiprocessing
import os
import pathlib
import random
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from keras_r3d.files import probe_writable, write_atomic
from keras_r3d.interrupts import raise_if_interrupted, sticky_interrupts
from keras_r3d.text import first_few
from tfrecords_tools import schema
from tfrecords_tools.sources import FORMATS, AnnotationError, Item

PLAN = ".plan.json"
PROGRESS = ".progress"


def shard_name(split, index, count):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def encode_item(item, short_side, jpeg_quality, min_frames, fps=None):
    """Decodes, resizes and JPEG-encodes one video (runs in a worker process);
    with `fps`, a video file's frames are first resampled to that rate as
    predict resamples them (frame folders keep theirs: their rate is unknown).

    Returns ("ok", item, dict) or ("skip", item, reason).
    """
    from keras_r3d.video import VideoError, read_video, resample_indices

    try:  # each frame shrunk as it decodes
        frames, source_fps = read_video(item.source, complete=True,
                                        frame_transform=lambda frame: _shrink(frame, short_side))
    except VideoError as error:
        return "skip", item, str(error)
    except Exception as error:  # a decoder crash on a corrupt file is a bad input, not a stop
        return "skip", item, f"{item.source}: cannot decode ({type(error).__name__}: {error})"
    frames = frames[resample_indices(len(frames), source_fps, fps)]
    fps = fps if fps and source_fps else source_fps
    if len(frames) < min_frames:
        return "skip", item, f"too short: {len(frames)} frames < --min_frames {min_frames}"
    height, width = frames.shape[1:3]
    jpegs = [_jpeg(frame, jpeg_quality) for frame in frames]
    return "ok", item, {"jpegs": jpegs, "fps": fps, "height": height, "width": width}


def _shrink(frame, short_side):
    """The shorter side to `short_side` (0: kept), never upscaled."""
    from PIL import Image

    height, width = frame.shape[:2]
    scale = short_side / min(height, width) if short_side else 1.0
    if scale >= 1.0:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


def _jpeg(frame, quality):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _encode_star(args):
    return encode_item(*args)


def _estimated_bytes(items, arguments):
    """Encoded size of the items: for up to 64 of them, a frame near the middle encoded
    as they will be, times their frame count."""
    from keras_r3d.video import resample_indices, sample_frame

    if not items:
        return 0
    sample = items[:: max(1, len(items) // 64)][:64]
    total = 0
    for item in sample:
        try:
            frame, count, source_fps = sample_frame(item.source)
        except Exception:  # an unreadable video is skipped when converted: it takes no room
            continue
        frames = len(resample_indices(count, source_fps, arguments.get("fps")))
        total += frames * len(_jpeg(_shrink(frame, arguments["short_side"]), arguments["jpeg_quality"]))
    return total / len(sample) * len(items)


def make_plan(items, arguments):
    """Assigns the items of each split to shards: shuffled with a fixed seed so
    that every shard mixes the classes, then dealt out in contiguous runs."""
    shards = {}
    for split in sorted({item.split for item in items}):
        members = [item for item in items if item.split == split]
        random.Random(0).shuffle(members)
        if arguments["num_shards"]:
            count = arguments["num_shards"]
        else:
            count = math.ceil(_estimated_bytes(members, arguments) / (arguments["shard_size_mb"] * 2**20))
        count = max(1, min(count, len(members)))
        bounds = [round(i * len(members) / count) for i in range(count + 1)]
        for index in range(count):
            shards[shard_name(split, index, count)] = [
                dataclasses.asdict(item) for item in members[bounds[index]:bounds[index + 1]]]
    return shards


def load_or_make_plan(output, items, arguments, labels):
    """The plan of a previous run with the same arguments, labels and videos,
    or a new one."""
    path = output / PLAN
    if path.exists():
        plan = json.loads(path.read_text())
        if plan["arguments"] != arguments:
            changed = sorted(k for k in {*arguments, *plan["arguments"]}  # an --fps given once is absent once
                             if plan["arguments"].get(k) != arguments.get(k))
            raise AnnotationError(
                f"{output} holds a conversion made with other arguments ({', '.join(changed)}); "
                f"use another --output, or delete {output} to start over")
        # Sources as absolute paths (earlier versions' plans hold them from this working folder).
        planned = sorted(json.dumps({**entry, "source": os.path.abspath(entry["source"])}, sort_keys=True)
                         for entries in plan["shards"].values() for entry in entries)
        listed = sorted(json.dumps(dataclasses.asdict(item), sort_keys=True) for item in items)
        then = plan.get("labels", labels)
        if then != labels or planned != listed:
            differ = [label for label in then if label not in labels] + [label for label in labels if label not in then]
            classes = (f"; classes in one only: {first_few(differ, 5)}"
                       if differ else "; the classes' order differs" if then != labels else "")
            raise AnnotationError(
                f"{output} holds a conversion of other videos or classes than --input lists now "
                f"({len(planned)} videos planned, {len(listed)} listed{classes}); use another --output, or "
                f"delete {output} to start over")
        _refuse_foreign_shards(output, plan)
        return plan
    held = sorted(path.name for path in output.glob("*.tfrecord")) + \
        ([schema.MANIFEST] if (output / schema.MANIFEST).exists() else [])
    if held:  # a set copied or made elsewhere (no plan of its conversion): its shards would be overwritten
        raise AnnotationError(f"{output} already holds a set ({first_few(held, 3)}) that this conversion did not plan: "
                              "use another --output")
    plan = {"arguments": arguments, "labels": labels, "shards": make_plan(items, arguments)}
    write_atomic(path, json.dumps(plan))
    return plan


def _refuse_foreign_shards(output, plan):
    foreign = sorted(shard.name for shard in output.glob("*.tfrecord") if shard.name not in plan["shards"])
    if foreign:
        raise AnnotationError(
            f"{output} holds shards that this conversion does not write ({first_few(foreign, 3)}): they would join "
            "its set; delete them or use another --output")


def _done(output, name):
    return (output / PROGRESS / f"{name}.json").exists() and (output / name).exists()


def convert(format, input, output, *, annotations=None, split=1, shard_size_mb=200.0,
            num_shards=None, workers=1, short_side=128, jpeg_quality=90, val_fraction=0.0,
            min_frames=1, fps=None, progress=True):
    """Converts a dataset (see the module docstring) and returns the manifest dict.

    Raises:
        AnnotationError: wrong or missing annotations, an unknown label, or an
            output made with other arguments; raised before any work.
    """
    from tqdm import tqdm

    if format not in FORMATS:
        raise AnnotationError(f"--format must be one of {sorted(FORMATS)}, got {format!r}")
    if not pathlib.Path(input).is_dir():
        raise AnnotationError(f"--input {input} is not a folder")
    for name, value, low in (("workers", workers, 1), ("short_side", short_side, 0),
                             ("min_frames", min_frames, 1), ("jpeg_quality", jpeg_quality, 1)):
        if int(value) != value or value < low:
            raise AnnotationError(f"--{name} must be an integer >= {low}, got {value}")
    if jpeg_quality > 100:
        raise AnnotationError(f"--jpeg_quality must be at most 100, got {jpeg_quality}")
    if fps is not None and not fps > 0:
        raise AnnotationError(f"--fps must be > 0, got {fps}")
    if num_shards is not None and num_shards < 1 or shard_size_mb <= 0:
        raise AnnotationError("--num_shards must be >= 1 and --shard_size_mb > 0")
    if val_fraction and format != "folders":
        raise AnnotationError(f"--val_fraction is for --format folders; {format}'s annotations give the splits")
    if split != 1 and format != "ucf101":
        raise AnnotationError(f"--split chooses one of UCF-101's three splits; --format {format} has one")
    output = pathlib.Path(output)
    if format == "folders" and pathlib.Path(input).resolve() in output.resolve().parents:
        raise AnnotationError(f"--output {output} is inside --input {input}, where it would become a class")
    labels, items, missing = FORMATS[format](
        input, annotations, split=split, val_fraction=val_fraction)
    if not items:  # before any file is written: a wrong --input or --format, corrected, then runs
        example = f" (e.g. {missing[0][0]}: {missing[0][1]})" if missing else ""
        raise AnnotationError(f"none of the {len(missing)} videos the annotations list is under --input "
                              f"{input}{example}: check --input and --format")
    # As absolute paths, so that the same conversion resumes from another working folder.
    items = [dataclasses.replace(item, source=os.path.abspath(item.source)) for item in items]
    try:
        probe_writable(output / PROGRESS, f"--output {output}")
    except ValueError as error:
        raise AnnotationError(str(error)) from None
    arguments = {
        "format": format, "input": str(pathlib.Path(input).resolve()),
        "annotations": str(pathlib.Path(annotations).resolve()) if annotations else None,
        "split": split, "shard_size_mb": shard_size_mb, "num_shards": num_shards,
        "short_side": short_side, "jpeg_quality": jpeg_quality, "val_fraction": val_fraction,
        "min_frames": min_frames,
        **({"fps": fps} if fps else {}),  # absent, as before --fps existed, so older outputs resume
    }
    plan = load_or_make_plan(output, items, arguments, labels)
    pending = {name: [Item(**entry) for entry in entries]
               for name, entries in plan["shards"].items() if not _done(output, name)}
    for stale in output.glob(".*.tfrecord.tmp-*"):
        stale.unlink()
    jobs = [(item, short_side, jpeg_quality, min_frames, fps) for entries in pending.values() for item in entries]
    stop_read, stop_write = multiprocessing.Pipe(duplex=False)  # closing stop_write stops the workers
    # Fork before TensorFlow runs anything (it is imported, but no op has run):
    # workers then start at once instead of importing Keras again.
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_start_worker, initargs=(stop_read, stop_write)) \
        if workers > 1 and jobs else None
    bar = tqdm(total=len(jobs), unit="video", desc="converting", disable=not progress, dynamic_ncols=True)
    try:
        results = _in_order(executor, jobs, ahead=4 * workers) if executor else map(_encode_star, jobs)
        for name, entries in pending.items():
            _write_shard(output, name, entries, results, bar)
    except BaseException:  # Ctrl-C, a dead worker: the videos being encoded are not waited for
        stop_write.close()  # the workers exit
        raise
    finally:
        bar.close()
        if executor:
            executor.shutdown(wait=True, cancel_futures=True)
        stop_read.close()
        stop_write.close()
    manifest = _manifest(output, plan, labels, missing)
    # The splits that the annotations name (or the folders' hash gave videos) but that hold none.
    named = {item.split for item in items} | {split for _, _, split in missing if split}
    manifest["empty_splits"] = sorted(named - {s for s, entry in manifest["splits"].items() if entry["videos"]})
    write_atomic(output / schema.MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _start_worker(stop_read, stop_write):
    """A worker's initializer: Ctrl-C is the main process's to handle, and the
    worker exits at once, whatever it is encoding, when the main process
    closes `stop_write` (or dies). ProcessPoolExecutor has no public way to
    terminate its workers (before Python 3.14)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_write.close()  # the main process's is then the only one
    threading.Thread(target=_exit_at_eof, args=(stop_read,), daemon=True).start()


def _exit_at_eof(stop_read):
    stop_read.poll(None)  # readable at the end of file, once no process holds the write end
    os._exit(1)


def _in_order(executor, jobs, ahead):
    """encode_item's results in job order, at most `ahead` jobs in flight.
    Raises BrokenProcessPool where a worker died (killed for memory, say)."""
    jobs = iter(jobs)
    running = collections.deque(executor.submit(_encode_star, job) for job in itertools.islice(jobs, ahead))
    while running:
        result = running.popleft().result()
        running.extend(executor.submit(_encode_star, job) for job in itertools.islice(jobs, 1))
        yield result


def _write_shard(output, name, entries, results, bar):
    import tensorflow as tf

    temporary = output / f".{name}.tmp-{os.getpid()}"
    videos, skipped = [], []
    with tf.io.TFRecordWriter(str(temporary)) as writer:
        for _ in entries:
            status, item, result = next(results)
            raise_if_interrupted()
            bar.update(1)
            if status == "skip":
                skipped.append({"source": item.source, "video_id": item.video_id,
                                "split": item.split, "reason": result})
                continue
            writer.write(schema.encode_video(
                result["jpegs"], label_index=item.label_index, label_text=item.label_text,
                video_id=item.video_id, fps=result["fps"], height=result["height"],
                width=result["width"], source=item.source))
            videos.append({"video_id": item.video_id, "label_index": item.label_index,
                           "num_frames": len(result["jpegs"])})
    os.replace(temporary, output / name)
    write_atomic(output / PROGRESS / f"{name}.json", json.dumps({"videos": videos, "skipped": skipped}))


def _manifest(output, plan, labels, missing):
    splits, skipped = {}, [{"source": source, "reason": reason} for source, reason, _ in missing]
    for name in plan["shards"]:
        done = json.loads((output / PROGRESS / f"{name}.json").read_text())
        split = name.split("-")[0]
        entry = splits.setdefault(split, {"videos": 0, "per_class": {}, "shards": []})
        entry["videos"] += len(done["videos"])
        for video in done["videos"]:
            label = labels[video["label_index"]]
            entry["per_class"][label] = entry["per_class"].get(label, 0) + 1
        entry["shards"].append({"file": name, "videos": len(done["videos"]),
                                "num_frames": [video["num_frames"] for video in done["videos"]]})
        skipped += done["skipped"]
    for entry in splits.values():  # in label order
        entry["per_class"] = {label: entry["per_class"][label] for label in labels if label in entry["per_class"]}
    return {"schema_version": schema.SCHEMA_VERSION, "labels": labels, "splits": splits,
            "arguments": plan["arguments"], "skipped": skipped}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfrecords_tools.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--input", required=True, help="the dataset's video or frame-folder root")
    parser.add_argument("--output", required=True, help=f"the folder for shards and {schema.MANIFEST}")
    parser.add_argument("--annotations", help="annotation folder (jester, ucf101) or CSV (kinetics)")
    parser.add_argument("--split", type=int, default=1, help="UCF-101 split: 1, 2 or 3")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--shard_size_mb", type=float, default=200.0, help="approximate shard size")
    sizes.add_argument("--num_shards", type=int, help="shards per split (instead of --shard_size_mb)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--short_side", type=int, default=128, help="resize the shorter side to this "
                        "(never upscaled); 0 keeps the original size")
    parser.add_argument("--jpeg_quality", type=int, default=90)
    parser.add_argument("--val_fraction", type=float, default=0.0,
                        help="folders: share of videos in val (1: all, an evaluation set)")
    parser.add_argument("--min_frames", type=int, default=1, help="skip videos with fewer frames")
    parser.add_argument("--fps", type=float, default=None,
                        help="resample video files to this frame rate, as predict and the exports "
                             "resample to the model's (frame folders keep their frames)")
    args = vars(parser.parse_args(argv))
    output = args["output"]
    try:
        with sticky_interrupts():
            manifest = convert(args.pop("format"), args.pop("input"), args.pop("output"), **args)
    except AnnotationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: the finished shards in {output} are kept; the same command resumes",
              file=sys.stderr)
        return 130
    except BrokenProcessPool:
        print(f"error: a worker process died (killed by the system: out of memory?); the finished shards in "
              f"{output} are kept; the same command resumes (with fewer --workers if memory ran out)",
              file=sys.stderr)
        return 1
    for split, entry in manifest["splits"].items():
        print(f"{split}: {entry['videos']} videos in {len(entry['shards'])} shards")
    for split in manifest["empty_splits"]:
        print(f"warning: no {split} videos: each of its inputs was skipped or missing (all in "
              f"{output}/{schema.MANIFEST})", file=sys.stderr)
    if args["val_fraction"] and "val" not in manifest["splits"] and "val" not in manifest["empty_splits"]:
        print("warning: no val videos: every class has one video, which stays in train", file=sys.stderr)
    if "val" not in manifest["splits"] and not args["val_fraction"] and "train" in manifest["splits"] \
            and manifest["arguments"]["format"] == "folders":
        print(f"note: every video went to train, and training needs a val split too: delete {output} and "
              "convert again with --val_fraction 0.1 to hold some out", file=sys.stderr)
    converted = {label for entry in manifest["splits"].values() for label in entry["per_class"]}
    empty = [label for label in manifest["labels"] if label not in converted]
    if empty and converted:  # a class whose videos were all skipped, or that the annotations never list
        print(f"warning: {len(empty)} of the {len(manifest['labels'])} classes have no video in any split: "
              f"{first_few(empty, 5)} (a model still gets an output for each)", file=sys.stderr)
    untrained = [label for label in manifest["labels"]
                 if label in converted and label not in manifest["splits"].get("train", {}).get("per_class", {})]
    if untrained and "train" in manifest["splits"]:
        print(f"warning: {len(untrained)} of the {len(manifest['labels'])} classes have no train video (only other "
              f"splits): {first_few(untrained, 5)}; a model never learns them (give them more videos)",
              file=sys.stderr)
    unvalidated = [label for label in manifest["labels"]
                   if label in converted and label not in manifest["splits"].get("val", {}).get("per_class", {})]
    if unvalidated and "val" in manifest["splits"]:
        print(f"warning: {len(unvalidated)} of the {len(manifest['labels'])} classes have no val video: "
              f"{first_few(unvalidated, 5)}; validation never scores them"
              + (" (a larger --val_fraction gives them some)" if args["val_fraction"] else ""), file=sys.stderr)
    if manifest["skipped"]:
        print(f"skipped {len(manifest['skipped'])} inputs (all in {output}/{schema.MANIFEST}):")
        for entry in manifest["skipped"][:10]:
            source, reason = entry["source"], entry["reason"]
            print(f"  {reason if reason.startswith(source) else f'{source}: {reason}'}")
        if len(manifest["skipped"]) > 10:
            print(f"  ... and {len(manifest['skipped']) - 10} more")
    if not any(entry["videos"] for entry in manifest["splits"].values()):
        print("error: no video was converted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
