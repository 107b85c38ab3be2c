"""Listing the videos of each dataset format from its annotations.

Each `list_<format>` returns `(labels, items, missing)`: the label names in
class-index order, the `Item`s to convert, and `(source, reason, split)` for
annotated videos that are not on disk and other inputs left out (split None
where no annotation names one). A wrong or missing annotation file, or
an unknown label, raises `AnnotationError` before any work starts.
"""
import csv
import dataclasses
import hashlib
import pathlib

from keras_r3d.video import FRAME_SUFFIXES, VIDEO_SUFFIXES


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
    if not path.is_file():
        raise AnnotationError(f"missing annotation file {path} ({what})")
    return path


def _read_lines(path):
    return [line.strip() for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def _read_class_index(path):
    """`classInd.txt`: lines `<1-based index> <name>`, indices 1..K."""
    labels = {}
    for number, line in enumerate(_read_lines(path), 1):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise AnnotationError(f"{path}:{number}: expected '<index> <class name>', got {line!r}")
        labels[int(parts[0])] = parts[1]
    if sorted(labels) != list(range(1, len(labels) + 1)):
        raise AnnotationError(f"{path}: class indices must be 1..{len(labels)}")
    if not labels:
        raise AnnotationError(f"{path}: no classes")
    return [labels[i] for i in range(1, len(labels) + 1)]


def _index_videos(root, suffixes=VIDEO_SUFFIXES):
    """Maps file stem -> path for the videos found recursively under `root`."""
    found = {}
    for path in sorted(pathlib.Path(root).rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file():
            found.setdefault(path.stem, path)
    return found


def _finish(items, missing, labels):
    if not items and not missing:
        raise AnnotationError("the annotations list no videos")
    ids = [(item.split, item.video_id) for item in items]
    if len(set(ids)) != len(ids):
        raise AnnotationError("the annotations list a video twice in one split")
    return labels, items, missing


def list_jester(input_dir, annotations, **_):
    """Jester frame folders `INPUT/<id>/00001.jpg`, with either the official
    `classInd.txt` + `trainlist.txt`/`vallist.txt` (`<id> <class index>`), or the
    20BN `jester-v1-labels.csv` + `jester-v1-train.csv`/`-validation.csv`
    (`<id>;<label>`). 20BN names become the official ones (spaces -> '_',
    sorted), so both give the official class order."""
    if annotations is None:
        raise AnnotationError("--annotations is required for --format jester")
    folder = pathlib.Path(annotations)
    if (folder / "classInd.txt").is_file():
        labels = _read_class_index(folder / "classInd.txt")
        lists = {"train": folder / "trainlist.txt", "val": folder / "vallist.txt"}
        parse = _parse_index_line
    elif (folder / "jester-v1-labels.csv").is_file():
        labels = sorted(name.replace(" ", "_") for name in _read_lines(folder / "jester-v1-labels.csv"))
        lists = {"train": folder / "jester-v1-train.csv", "val": folder / "jester-v1-validation.csv"}
        parse = _parse_csv_line
    else:
        raise AnnotationError(f"{folder}: found neither classInd.txt nor jester-v1-labels.csv")
    lists = {split: path for split, path in lists.items() if path.is_file()}
    if not lists:
        raise AnnotationError(f"{folder}: no train or validation list next to the class list")
    items, missing = [], []
    for split, path in lists.items():
        for number, line in enumerate(_read_lines(path), 1):
            video_id, label_index = parse(line, labels, f"{path}:{number}")
            source = pathlib.Path(input_dir) / video_id
            if not source.is_dir():
                missing.append((str(source), "missing: no such frame folder", split))
                continue
            items.append(Item(str(source), video_id, label_index, labels[label_index], split))
    return _finish(items, missing, labels)


def _parse_index_line(line, labels, where):
    parts = line.split()
    if len(parts) != 2 or not parts[1].isdigit():
        raise AnnotationError(f"{where}: expected '<video id> <class index>', got {line!r}")
    index = int(parts[1])
    if not 1 <= index <= len(labels):
        raise AnnotationError(f"{where}: unknown class index {index} (classes are 1..{len(labels)})")
    return parts[0], index - 1


def _parse_csv_line(line, labels, where):
    parts = line.split(";")
    if len(parts) != 2:
        raise AnnotationError(f"{where}: expected '<video id>;<label>', got {line!r}")
    label = parts[1].strip().replace(" ", "_")
    if label not in labels:
        raise AnnotationError(f"{where}: unknown label {parts[1]!r}")
    return parts[0].strip(), labels.index(label)


def list_ucf101(input_dir, annotations, split=1, **_):
    """UCF-101 `.avi` videos found recursively, with the official `classInd.txt`,
    `trainlist0N.txt` (`Class/v_X.avi <index>`) and `testlist0N.txt`
    (`Class/v_X.avi`). The test list becomes the `val` split."""
    if annotations is None:
        raise AnnotationError("--annotations is required for --format ucf101")
    if split not in (1, 2, 3):
        raise AnnotationError(f"--split must be 1, 2 or 3 for UCF-101, got {split}")
    folder = pathlib.Path(annotations)
    labels = _read_class_index(_require_file(folder / "classInd.txt", "UCF-101 class list"))
    lists = {"train": _require_file(folder / f"trainlist0{split}.txt", f"UCF-101 split {split} train list"),
             "val": _require_file(folder / f"testlist0{split}.txt", f"UCF-101 split {split} test list")}
    videos = _index_videos(input_dir, (".avi",))
    items, missing = [], []
    for subset, path in lists.items():
        for number, line in enumerate(_read_lines(path), 1):
            parts = line.split()
            name = parts[0].replace("\\", "/")
            if "/" not in name or len(parts) > 2:
                raise AnnotationError(f"{path}:{number}: expected '<Class>/<video>.avi [index]', got {line!r}")
            class_name = name.split("/")[0]
            if class_name not in labels:
                raise AnnotationError(f"{path}:{number}: unknown class {class_name!r}")
            label_index = labels.index(class_name)
            if len(parts) == 2 and parts[1] != str(label_index + 1):
                raise AnnotationError(f"{path}:{number}: index {parts[1]} is not {class_name!r} "
                                      f"({label_index + 1} in classInd.txt)")
            stem = pathlib.PurePosixPath(name).stem
            if stem not in videos:
                missing.append((name, "missing: no such .avi under --input", subset))
                continue
            items.append(Item(str(videos[stem]), stem, label_index, class_name, subset))
    return _finish(items, missing, labels)


KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
KINETICS_SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


def list_kinetics(input_dir, annotations, **_):
    """Kinetics videos `<youtube_id>_<start:06d>_<end:06d>.mp4` found recursively,
    with the official CSV (`label,youtube_id,time_start,time_end,split`).
    Labels are the CSV's label names, sorted."""
    path = _require_file(annotations, "Kinetics CSV") if annotations else None
    if path is None:
        raise AnnotationError("--annotations (the Kinetics CSV) is required for --format kinetics")
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
        header = rows[0].keys() if rows else ()
    absent = [c for c in KINETICS_COLUMNS if c not in header]
    if absent:
        raise AnnotationError(f"{path}: missing columns {absent}; expected {','.join(KINETICS_COLUMNS)}")
    labels = sorted({row["label"] for row in rows})
    videos = _index_videos(input_dir)
    items, missing = [], []
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
        items.append(Item(str(videos[key]), key, labels.index(row["label"]), row["label"], subset))
    return _finish(items, missing, labels)


def _utf8(name):
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as surrogates
        return False


def list_folders(input_dir, annotations=None, val_fraction=0.0, **_):
    """`INPUT/<class>/<video file or frame folder>`. Labels are the sorted class
    folder names (hidden and empty folders are none). A hash of the file name
    (without the class folder) puts `val_fraction` of the videos in `val`, the
    same way on every run; videos of the same name in several classes (one
    recording cut into several actions) never straddle train and val."""
    if annotations is not None:
        raise AnnotationError("--format folders takes no --annotations: labels are the folder names")
    if not 0.0 <= val_fraction <= 1.0:
        raise AnnotationError(f"--val_fraction must be in [0, 1], got {val_fraction}")
    root = pathlib.Path(input_dir)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []
    labels = [p.name for p in folders if any(not c.name.startswith(".") for c in p.iterdir())]
    if not labels:
        raise AnnotationError(f"{root}: expected class folders INPUT/<class>/<video>")
    missing = [(str(p), "an empty class folder: not a class", None) for p in folders if p.name not in labels]
    items = []
    for label_index, label in enumerate(labels):
        for path in sorted((root / label).iterdir()):
            if path.name.startswith("."):  # .DS_Store, .ipynb_checkpoints
                continue
            if not _utf8(path.name):
                missing.append((repr(path), "the file name is not valid UTF-8", None))
                continue
            if path.suffix.lower() in FRAME_SUFFIXES:
                missing.append((str(path), "a frame image: a video's frames go in a folder of their own", None))
                continue
            if not (path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES):
                missing.append((str(path), "not a video file or frame folder", None))
                continue
            digest = int.from_bytes(hashlib.sha1(path.name.encode()).digest()[:8], "big") / 2.0**64
            subset = "val" if digest < val_fraction else "train"
            items.append(Item(str(path), f"{label}/{path.stem if path.is_file() else path.name}",
                              label_index, label, subset))
    if not items:
        frames = any(pathlib.Path(source).suffix.lower() in FRAME_SUFFIXES for source, _, _ in missing)
        raise AnnotationError(f"{root}: no videos in its class folders (INPUT/<class>/<video file or "
                              "frame folder>)" + ("; the class folders hold frame images: a folder of "
                                                  "frames is one video, so put each in a class folder"
                                                  if frames else ""))
    return _finish(items, missing, labels)


FORMATS = {"jester": list_jester, "ucf101": list_ucf101, "kinetics": list_kinetics, "folders": list_folders}
