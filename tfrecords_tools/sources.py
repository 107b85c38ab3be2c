"""Listing the videos of each dataset format from its annotations.

Each `list_<format>` returns `(labels, items, missing)`: the label names in
class-index order, the `Item`s to convert, and `(source, reason, split)` for
annotated videos that are not on disk and other inputs left out (split None
where no annotation names one). A wrong or missing annotation file, or
an unknown label, raises `AnnotationError` before any work starts. Inputs
left out for a reason a user may not expect (a second video of the same name,
a folder that is not a class) are also named in a warning on stderr.
"""
import collections
import csv
import dataclasses
import hashlib
import os
import pathlib
import sys

from keras_r3d.convert import read_labels, read_lines
from keras_r3d.video import FRAME_SUFFIXES, VIDEO_SUFFIXES
from tfrecords_tools.schema import MANIFEST


class AnnotationError(ValueError):
    """Annotations that are missing, malformed, or name an unknown label."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One video to convert."""

    source: str
    video_id: str
    label_index: int
    label_text: str
    split: str


def _require_file(path, what):
    path = pathlib.Path(path)
    if path.is_dir():
        raise AnnotationError(f"{path} is a folder: give the {what} file itself")
    if not path.is_file():
        raise AnnotationError(f"missing annotation file {path} ({what})")
    return path


def _annotation_folder(annotations, what):
    """--annotations of the formats that take a folder of lists."""
    folder = pathlib.Path(annotations)
    if not folder.is_dir():
        raise AnnotationError(f"--annotations {folder}: {'a file' if folder.exists() else 'no such folder'}; "
                              f"it takes the folder that holds {what}")
    return folder


def _read_annotation(read, path):
    """`read(path)`, with its ValueError (malformed, not UTF-8) as an AnnotationError."""
    try:
        return read(path)
    except ValueError as error:
        raise AnnotationError(str(error)) from None


def _warn_left_out(what, entries):
    """Prints a warning naming up to three of the left-out `entries`."""
    names = ", ".join(source for source, _, _ in entries[:3])
    more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
    print(f"warning: {what}: {names}{more} (reasons in {MANIFEST})", file=sys.stderr)


def _index_videos(root, suffixes=VIDEO_SUFFIXES, frame_folders=False):
    """Maps file stem -> the paths of the videos of that name under `root`, in
    path order; with `frame_folders`, folders that hold frame images too, by
    their name. Symlinked folders are followed, each real folder once (so a
    link loop ends)."""
    found, seen = {}, set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a second link to a folder, or a loop
            subfolders.clear()
            continue
        seen.add(real)
        subfolders.sort()  # the same folder is reached by the same path on every run
        if frame_folders and any(pathlib.Path(name).suffix.lower() in FRAME_SUFFIXES for name in files):
            found.setdefault(pathlib.Path(folder).name, []).append(pathlib.Path(folder))
        for name in files:
            path = pathlib.Path(folder, name)
            if path.suffix.lower() in suffixes and path.is_file():
                found.setdefault(path.stem, []).append(path)
    return {stem: sorted(paths) for stem, paths in found.items()}


def _pick(paths, split, duplicates, preferred=None):
    """The one of `paths`, all of one video's name, to convert: `preferred` if it
    is one of them, else the first in path order. The others go to `duplicates`."""
    chosen = preferred if preferred in paths else paths[0]
    duplicates += [(str(path), f"the same name as {chosen}, which is converted", split)
                   for path in paths if path != chosen]
    return chosen


def _finish(items, missing, duplicates, labels, annotations):
    if not items and not missing:
        raise AnnotationError(f"{annotations}: the annotations list no videos")
    seen = set()
    for item in items:
        if (item.split, item.video_id) in seen:
            raise AnnotationError(f"{annotations}: the annotations list {item.video_id} twice in {item.split}")
        seen.add((item.split, item.video_id))
    if duplicates:
        _warn_left_out(f"{len(duplicates)} left out as another video of the same name is converted", duplicates)
    return labels, items, missing + duplicates


# Jester's annotation files by role, each under the names in use; the first found is read.
JESTER_OFFICIAL = {"classes": ("classInd.txt", "categories.txt"),  # okankop/Efficient-3DCNNs,
                   "train": ("trainlist.txt", "trainlist01.txt"),  # its README and utils/jester_json.py
                   "val": ("vallist.txt", "vallist01.txt")}
JESTER_20BN = {"classes": ("jester-v1-labels.csv",), "train": ("jester-v1-train.csv",),
               "val": ("jester-v1-validation.csv",)}


def _first_file(folder, names):
    return next((folder / name for name in names if (folder / name).is_file()), None)


def list_jester(input_dir, annotations, **_):
    """Jester frame folders `INPUT/<id>/00001.jpg`, with either the official
    `classInd.txt` (or `categories.txt`) + `trainlist.txt`/`vallist.txt` (or
    `...01.txt`), lines `<id> <class index>`, or the 20BN `jester-v1-labels.csv`
    + `jester-v1-train.csv`/`-validation.csv`, lines `<id>;<label>`. 20BN names
    become the official ones (spaces -> '_', sorted), so both give the official
    class order. A missing train or val list is warned about: no such split."""
    if annotations is None:
        raise AnnotationError("--annotations is required for --format jester")
    folder = _annotation_folder(annotations, "the class list and the train and val lists")
    if class_list := _first_file(folder, JESTER_OFFICIAL["classes"]):
        names, parse = JESTER_OFFICIAL, _parse_index_line
        labels = _read_annotation(read_labels, class_list)
    elif class_list := _first_file(folder, JESTER_20BN["classes"]):
        names, parse = JESTER_20BN, _parse_csv_line
        labels = sorted(name.replace(" ", "_") for name in _read_annotation(read_labels, class_list))
    else:
        raise AnnotationError(f"{folder}: found no class list ("
                              f"{', '.join(JESTER_OFFICIAL['classes'] + JESTER_20BN['classes'])})")
    found = {split: _first_file(folder, names[split]) for split in ("train", "val")}
    lists = {split: path for split, path in found.items() if path}
    if not lists:
        raise AnnotationError(f"{folder}: no train or validation list next to {class_list.name} "
                              f"({', '.join(names['train'] + names['val'])})")
    for split in found.keys() - lists.keys():
        print(f"warning: {folder}: no {split} list ({' or '.join(names[split])}): no {split} split",
              file=sys.stderr)
    index_of = {label: index for index, label in enumerate(labels)}
    items, missing = [], []
    for split, path in lists.items():
        lines = _read_annotation(read_lines, path)
        if not lines:
            print(f"warning: {path} is empty: no {split} split", file=sys.stderr)
        for number, line in enumerate(lines, 1):
            video_id, label_index = parse(line, index_of, f"{path}:{number}")
            source = pathlib.Path(input_dir) / video_id
            if not source.is_dir():
                missing.append((str(source), "missing: no such frame folder", split))
                continue
            items.append(Item(str(source), video_id, label_index, labels[label_index], split))
    return _finish(items, missing, [], labels, folder)


def _parse_index_line(line, index_of, where):
    parts = line.split()
    if len(parts) != 2 or not parts[1].isdigit():
        raise AnnotationError(f"{where}: expected '<video id> <class index>', got {line!r}")
    index = int(parts[1])
    if not 1 <= index <= len(index_of):
        raise AnnotationError(f"{where}: unknown class index {index} (classes are 1..{len(index_of)})")
    return parts[0], index - 1


def _parse_csv_line(line, index_of, where):
    parts = line.split(";")
    if len(parts) != 2:
        raise AnnotationError(f"{where}: expected '<video id>;<label>', got {line!r}")
    label = parts[1].strip().replace(" ", "_")
    if label not in index_of:
        raise AnnotationError(f"{where}: unknown label {parts[1]!r}")
    return parts[0].strip(), index_of[label]


def list_ucf101(input_dir, annotations, split=1, **_):
    """UCF-101 `.avi` videos, or the frame folders `Class/v_X/image_00001.jpg`
    that the official code extracts from them, found recursively, with the
    official `classInd.txt`, `trainlist0N.txt` (`Class/v_X.avi <index>`) and
    `testlist0N.txt` (`Class/v_X.avi`). The test list becomes the `val` split.
    Of videos of one name, the one at the listed path under INPUT is converted."""
    if annotations is None:
        raise AnnotationError("--annotations is required for --format ucf101")
    if split not in (1, 2, 3):
        raise AnnotationError(f"--split must be 1, 2 or 3 for UCF-101, got {split}")
    folder = _annotation_folder(annotations, "classInd.txt and the trainlist/testlist files")
    labels = _read_annotation(read_labels, _require_file(folder / "classInd.txt", "UCF-101 class list"))
    lists = {"train": _require_file(folder / f"trainlist0{split}.txt", f"UCF-101 split {split} train list"),
             "val": _require_file(folder / f"testlist0{split}.txt", f"UCF-101 split {split} test list")}
    index_of = {label: index for index, label in enumerate(labels)}
    videos = _index_videos(input_dir, (".avi",), frame_folders=True)
    # Copies "fixed" to the class folder's case (v_HandstandPushups_...) while the lists keep the
    # official v_HandStandPushups_...: found by a name unique without case.
    by_case = collections.Counter(stem.casefold() for stem in videos)
    uncased = {stem.casefold(): stem for stem in videos if by_case[stem.casefold()] == 1}
    items, missing, duplicates = [], [], []
    for subset, path in lists.items():
        for number, line in enumerate(_read_annotation(read_lines, path), 1):
            parts = line.split()
            name = parts[0].replace("\\", "/")
            if "/" not in name or len(parts) > 2:
                raise AnnotationError(f"{path}:{number}: expected '<Class>/<video>.avi [index]', got {line!r}")
            class_name = name.split("/")[0]
            if class_name not in index_of:
                raise AnnotationError(f"{path}:{number}: unknown class {class_name!r}")
            label_index = index_of[class_name]
            if len(parts) == 2 and parts[1] != str(label_index + 1):
                raise AnnotationError(f"{path}:{number}: index {parts[1]} is not {class_name!r} "
                                      f"({label_index + 1} in classInd.txt)")
            stem = pathlib.PurePosixPath(name).stem
            found = stem if stem in videos else uncased.get(stem.casefold())
            if found is None:
                missing.append((name, "missing: no such .avi or frame folder under --input", subset))
                continue
            listed = pathlib.Path(input_dir, pathlib.PurePosixPath(name).parent, found + ".avi")
            source = _pick(videos[found], subset, duplicates,
                           preferred=listed if listed in videos[found] else listed.with_suffix(""))
            items.append(Item(str(source), stem, label_index, class_name, subset))
    return _finish(items, missing, duplicates, labels, folder)


KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
KINETICS_SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


def list_kinetics(input_dir, annotations, **_):
    """Kinetics videos `<youtube_id>_<start:06d>_<end:06d>.mp4` found recursively,
    with the official CSV (`label,youtube_id,time_start,time_end,split`).
    Labels are the CSV's label names, sorted. Of videos of one name (X.mkv next
    to X.mp4), the first in path order is converted."""
    path = _require_file(annotations, "Kinetics CSV") if annotations else None
    if path is None:
        raise AnnotationError("--annotations (the Kinetics CSV) is required for --format kinetics")
    reader = csv.DictReader(_read_annotation(read_lines, path))
    rows = list(reader)
    absent = [c for c in KINETICS_COLUMNS if c not in (reader.fieldnames or ())]
    if absent:
        raise AnnotationError(f"{path}: missing columns {absent}; expected {','.join(KINETICS_COLUMNS)}")
    labels = sorted({row["label"] for row in rows})
    index_of = {label: index for index, label in enumerate(labels)}
    videos = _index_videos(input_dir)
    items, missing, duplicates = [], [], []
    for number, row in enumerate(rows, 2):
        subset = KINETICS_SPLITS.get(row["split"])
        if subset is None:
            raise AnnotationError(f"{path}:{number}: unknown split {row['split']!r}")
        try:
            key = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"
        except ValueError:
            raise AnnotationError(f"{path}:{number}: time_start/time_end must be integers") from None
        if key not in videos:
            missing.append((key, "missing: no such video under --input", subset))
            continue
        source = _pick(videos[key], subset, duplicates)
        items.append(Item(str(source), key, index_of[row["label"]], row["label"], subset))
    return _finish(items, missing, duplicates, labels, path)


def _utf8(name):
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as surrogates
        return False


def _entries(folder, missing):
    """The entries of `folder` in name order, less hidden ones (.DS_Store,
    .ipynb_checkpoints) and those whose name is not valid UTF-8 (to `missing`)."""
    entries = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if _utf8(path.name):
            entries.append(path)
        else:
            missing.append((os.fsencode(path).decode("utf-8", "backslashreplace"), "the name is not valid UTF-8",
                            None))
    return entries


def _class_videos(folder, missing, duplicates):
    """Maps video id -> path for the video files and frame folders of a class
    folder, one per id (`clip.mp4` and a frame folder `clip` share one)."""
    found = {}
    for path in _entries(folder, missing):
        if path.suffix.lower() in FRAME_SUFFIXES:
            missing.append((str(path), "a frame image: a video's frames go in a folder of their own", None))
        elif path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES:
            found.setdefault(f"{folder.name}/{path.name if path.is_dir() else path.stem}", []).append(path)
        else:
            missing.append((str(path), "not a video file or frame folder", None))
    return {video_id: _pick(paths, None, duplicates) for video_id, paths in found.items()}


def list_folders(input_dir, annotations=None, val_fraction=0.0, **_):
    """`INPUT/<class>/<video file or frame folder>`. Labels are the sorted names
    of the class folders that hold a video (hidden folders are none); other
    folders and videos outside them are warned about. A hash of the file name
    (without the class folder) puts `val_fraction` of the videos in `val`, the
    same way on every run; videos of the same name in several classes (one
    recording cut into several actions) never straddle train and val. Of a
    class folder's inputs of one name, the first in name order is converted."""
    if annotations is not None:
        raise AnnotationError("--format folders takes no --annotations: labels are the folder names")
    if not 0.0 <= val_fraction <= 1.0:
        raise AnnotationError(f"--val_fraction must be in [0, 1], got {val_fraction}")
    root = pathlib.Path(input_dir)
    missing, duplicates, not_classes, classes = [], [], [], {}
    for path in _entries(root, not_classes) if root.is_dir() else []:
        if path.is_dir():
            classes[path.name] = _class_videos(path, missing, duplicates)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            not_classes.append((str(path), "a video outside the class folders (INPUT/<class>/<video>)", None))
    if not classes:
        raise AnnotationError(f"{root}: expected class folders INPUT/<class>/<video>")
    not_classes += [(str(root / name), "no video file or frame folder in it: not a class", None)
                    for name, videos in classes.items() if not videos]
    labels = [name for name, videos in classes.items() if videos]
    if not labels:
        frames = any(pathlib.Path(source).suffix.lower() in FRAME_SUFFIXES for source, _, _ in missing)
        raise AnnotationError(f"{root}: no videos in its class folders (INPUT/<class>/<video file or "
                              "frame folder>)" + ("; the class folders hold frame images: a folder of "
                                                  "frames is one video, so put each in a class folder"
                                                  if frames else ""))
    if not_classes:
        _warn_left_out(f"{len(not_classes)} entries of {root} are not class folders with videos, so not "
                       "converted", not_classes)
    hashed = [(int.from_bytes(hashlib.sha1(path.name.encode()).digest()[:8], "big") / 2.0**64,
               Item(str(path), video_id, label_index, label, "train"))
              for label_index, label in enumerate(labels) for video_id, path in classes[label].items()]
    # A fraction under which no digest falls (a few videos) still puts the lowest in val, of a
    # class that keeps another video for train.
    lowest = None if any(digest < val_fraction for digest, _ in hashed) else \
        min((digest for digest, item in hashed if len(classes[item.label_text]) > 1), default=None)
    items = [dataclasses.replace(item, split="val") if val_fraction and (digest < val_fraction or digest == lowest)
             else item for digest, item in hashed]
    return _finish(items, not_classes + missing, duplicates, labels, root)


FORMATS = {"jester": list_jester, "ucf101": list_ucf101, "kinetics": list_kinetics, "folders": list_folders}
