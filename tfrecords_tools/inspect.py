"""Prints what a set of video TFRecords holds, and draws a contact sheet.

    python -m tfrecords_tools.inspect 'DIR/train-*.tfrecord' [--sheet sheet.png --clips 8 --columns 8]

Counts videos and frames, the label distribution, the frame sizes and rates
(reading the record contexts, no JPEG decoding), then writes a PNG with one
row per sampled video (one per label first) and `--columns` evenly spaced frames.
"""
import argparse
import collections
import itertools
import json
import pathlib
import re
import sys
import unicodedata

import numpy as np

from keras_r3d.text import first_few
from tfrecords_tools import schema


def shard_pattern(pattern):
    """A glob of shards as it is; a folder as the glob of its .tfrecord files."""
    import tensorflow as tf

    return f"{pattern.rstrip('/')}/*.tfrecord" if tf.io.gfile.isdir(pattern) else pattern


def summarize(file_pattern, progress=False):
    """Counts of the matching shards: videos, frames, sizes, frame rates
    (`schema.rounded_fps`) and labels, and the shards of their set that are
    missing, not in its manifest.json, or holding another number of videos
    than it lists."""
    import tensorflow as tf
    from tqdm import tqdm

    files = schema.glob_shards(file_pattern)
    if not files:
        raise FileNotFoundError(f"no files match {file_pattern!r}")
    labels, sizes, rates, frames = collections.Counter(), collections.Counter(), collections.Counter(), []
    videos_per_file = collections.Counter()
    for file in tqdm(files, unit="shard", desc="reading", disable=not progress, leave=False):
        try:
            for video in tf.data.TFRecordDataset([file]).map(schema.parse_video):
                videos_per_file[file] += 1
                labels[(int(video["label_index"]), video["label_text"].numpy().decode())] += 1
                sizes[(int(video["height"]), int(video["width"]))] += 1
                rates[schema.rounded_fps(video)] += 1
                frames.append(int(video["num_frames"]))
        except tf.errors.DataLossError as error:
            raise ValueError(f"{file}: truncated or corrupt ({schema.error_text(error)})") from None
        except tf.errors.OpError as error:
            raise ValueError(f"{file}: not a video TFRecord ({schema.error_text(error)})") from None
    unlisted, miscounted = manifest_mismatches(files, videos_per_file)
    return {"files": len(files), "missing": missing_shards(files), "unlisted": unlisted, "miscounted": miscounted,
            "videos": len(frames), "frames": sum(frames),
            "frames_per_video": (min(frames), float(np.mean(frames)), max(frames)) if frames else None,
            "labels": dict(sorted(labels.items())), "sizes": dict(sizes.most_common()),
            "frame_rates": dict(sorted(rates.items()))}


def missing_shards(files):
    """The shards `{split}-{i:05d}-of-{n:05d}.tfrecord` that do not exist beside
    the given ones of the same split and count: a conversion that did not finish."""
    present = collections.defaultdict(set)
    for file in files:
        match = re.fullmatch(r"(.*)-(\d{5})-of-(\d{5})\.tfrecord", str(file))
        if match:
            present[(match[1], int(match[3]))].add(int(match[2]))
    import tensorflow as tf

    from tfrecords_tools.convert import shard_name

    missing = []
    for (prefix, count), found in sorted(present.items()):
        names = (shard_name(prefix, i, count) for i in range(count) if i not in found)
        missing += [name for name in names if not tf.io.gfile.exists(name)]
    return missing


def manifest_mismatches(files, videos_per_file):
    """`(unlisted, miscounted)`: the given shards that the manifest.json beside
    them does not list (left there by another conversion), and those that
    hold another number of videos than it lists (replaced, or cut at a record
    boundary), by `videos_per_file`."""
    import tensorflow as tf

    from keras_r3d.data import manifest_shards

    unlisted, miscounted = [], []
    for folder, names in itertools.groupby(files, key=lambda file: file.rsplit("/", 1)[0] if "/" in file else "."):
        manifest = f"{folder}/{schema.MANIFEST}"
        if tf.io.gfile.exists(manifest):
            listed = manifest_shards(json.loads(tf.io.gfile.GFile(manifest).read()))
            for name in names:
                entry = listed.get(name.rsplit("/", 1)[-1])
                if entry is None:
                    unlisted.append(name)
                elif len(entry["num_frames"]) != videos_per_file[name]:
                    miscounted.append(name)
    return unlisted, miscounted


def contact_sheet(file_pattern, path, clips=8, columns=8, *, height=64, num_labels=None):
    """Writes a PNG of `clips` videos (one per label first), `columns` frames
    each; `num_labels` (the set's, where known) ends the reading early."""
    from PIL import Image, ImageDraw

    wanted_firsts = min(clips, num_labels or clips)
    firsts, others = {}, []  # the first video of each label, then the rest
    for video in schema.read_videos(file_pattern):
        if video["label_index"] not in firsts:
            firsts[video["label_index"]] = video
        elif len(others) < clips:
            others.append(video)
        if len(firsts) >= wanted_firsts and len(firsts) + len(others) >= clips:
            break
    chosen = (list(firsts.values()) + others)[:clips]
    label_width = 160
    rows = []
    for video in chosen:
        picks = np.linspace(0, len(video["frames"]) - 1, columns).round().astype(int)
        tiles = [Image.fromarray(video["frames"][i]) for i in picks]
        width = max(1, round(tiles[0].width * height / tiles[0].height))
        row = Image.new("RGB", (label_width + columns * width, height), "white")
        ImageDraw.Draw(row).text((4, 4), f"{video['label_text']}\n{_tail(video['video_id'], 22)}\n"
                                          f"{video['num_frames']} frames", fill="black")
        for c, tile in enumerate(tiles):
            row.paste(tile.resize((width, height)), (label_width + c * width, 0))
        rows.append(row)
    if not rows:
        raise ValueError(f"{file_pattern!r} holds no videos")
    sheet = Image.new("RGB", (max(r.width for r in rows), height * len(rows)), "white")
    for r, row in enumerate(rows):
        sheet.paste(row, (0, r * height))
    sheet.save(path)
    return path


def _columns(text):
    """Terminal columns of `text`: two for each wide (CJK) character."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _tail(text, width):
    return text if len(text) <= width else "..." + text[3 - width:]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfrecords_tools.inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pattern", help="glob of .tfrecord shards (quote it), or their folder")
    parser.add_argument("--sheet", default="contact_sheet.png",
                        help="PNG to write (default: %(default)s in the current folder; '' for none)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--columns", type=int, default=8)
    args = parser.parse_args(argv)
    pattern = shard_pattern(args.pattern)
    try:
        summary = summarize(pattern, progress=True)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from keras_r3d.data import frame_rates_text

    if summary["videos"]:
        low, mean, high = summary["frames_per_video"]
        print(f"{summary['videos']} videos, {summary['frames']} frames in {summary['files']} files; "
              f"frames per video min {low}, mean {mean:.1f}, max {high}")
        print("frame sizes (HxW): " + ", ".join(f"{h}x{w}: {n}" for (h, w), n in summary["sizes"].items()))
        print(f"frame rates: {frame_rates_text(summary['frame_rates'])}")
    else:
        print(f"0 videos in {summary['files']} files")
    for (index, label), count in summary["labels"].items():
        print(f"{index:5d} {label}{' ' * max(0, 40 - _columns(label))} {count}")
    if args.sheet and summary["videos"]:
        sheet = contact_sheet(pattern, args.sheet, args.clips, args.columns, num_labels=len(summary["labels"]))
        print(f"contact sheet: {sheet}")
    for key, what in (("unlisted", f"are not in the {schema.MANIFEST} beside them (left by another "
                                    "conversion; training refuses them)"),
                      ("miscounted", f"hold another number of videos than the {schema.MANIFEST} beside them "
                                     "lists (replaced or cut short: convert them again)"),
                      ("missing", "of this set are missing (the conversion did not finish; the same "
                                  "tfrecords_tools.convert command resumes it)")):
        if summary[key]:
            names = [pathlib.Path(shard).name for shard in summary[key]]
            print(f"error: {len(names)} shards {what}: {first_few(names, 3)}",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
