"""Reading videos (PyAV) and frame folders into uint8 RGB arrays."""
import math
import pathlib
import re
import sys

import numpy as np

from keras_r3d.text import first_few

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


class VideoError(ValueError):
    """An input that cannot be read as a video or frame folder."""


def _natural_key(path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder):
    """The naturally sorted frames of a folder (`00001.jpg`, `image_00001.jpg`;
    hidden files such as macOS's `._00001.jpg` are none)."""
    files = [p for p in pathlib.Path(folder).iterdir()
             if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".")]
    return sorted(files, key=_natural_key)


def resample_indices(num_frames, source_fps, target_fps):
    """Indices of the source frames nearest to a `target_fps` timeline."""
    if not source_fps or not target_fps or abs(source_fps - target_fps) < 1e-3:
        return np.arange(num_frames)
    count = max(1, int(num_frames * target_fps / source_fps))
    return np.minimum(np.round(np.arange(count) * source_fps / target_fps).astype(int), num_frames - 1)


def read_video(path, complete=False, frame_transform=None):
    """Decodes a video file or frame folder.

    Args:
        complete: raise on a video whose decoding fails part way (truncated
            or corrupt), instead of keeping the frames that decoded.
        frame_transform: a function applied to each RGB frame as it is
            decoded (a resize, say), so that a long high-resolution video is
            never held at full size.
    Returns:
        (frames, fps): uint8 `(T, H, W, 3)` RGB frames as shown (upright,
        square pixels; then as `frame_transform` returns them, where given)
        and the frame rate, or None where the source does not say (frame
        folders).
    Raises:
        VideoError: the path is missing, unreadable, or holds no frames.
    """
    path = pathlib.Path(path)
    frames = _Frames(path, frame_transform)
    if path.is_dir():
        _read_folder(path, frames)
        fps = None
    elif path.suffix.lower() in FRAME_SUFFIXES and path.is_file():
        raise VideoError(f"{path}: one image, not a video: pass the folder of its frames")
    elif path.suffix.lower() == ".tfrecord" and path.is_file():  # PyAV read its JPEGs as one video
        raise VideoError(f"{path}: a TFRecord shard of many videos, not a video: keras_r3d.evaluate --data "
                         "takes a glob of shards")
    elif path.is_file():
        fps = _read_file(path, frames, complete)
    else:
        raise VideoError(f"{path}: no such file or folder")
    if not frames.count:
        raise VideoError(f"{path}: no frames could be decoded")
    return frames.array[: frames.count], fps


def sample_frame(path):
    """A frame from about the middle of a video file (the key frame at or
    before it) or frame folder, with the frame count and rate (None for
    folders) that its header declares: what its frames will take, without
    decoding them all."""
    from PIL import Image

    path = pathlib.Path(path)
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise VideoError(f"{path}: a folder with no frames")
        with Image.open(files[len(files) // 2]) as image:
            return np.asarray(image.convert("RGB")), len(files), None
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = _frame_rate(stream)
        seconds = _video_seconds(container, stream)
        count = stream.frames or (round(seconds * fps) if seconds and fps else 0)
        if seconds:
            container.seek(round((stream.start_time or 0) + seconds / 2 / stream.time_base), stream=stream)
        frame = next(container.decode(stream), None)
        if frame is None:
            raise VideoError(f"{path}: no frames could be decoded")
        return _square_rgb(frame, stream.sample_aspect_ratio), count, fps


class _Frames:
    """Decoded frames, transformed and copied into one array that doubles as it
    fills: a list of many kept frames among large per-frame temporaries
    fragments the heap (a 1080p video cropped to 112 px grew by about 4 MB a
    frame that way)."""

    def __init__(self, path, transform):
        self.path, self.transform = path, transform
        self.array, self.count, self.size = None, 0, None

    def append(self, image, capacity, name=None, copies=1):
        """Adds an RGB frame `copies` times (`name`: its file, in a frame folder)."""
        if not copies:
            return
        if self.size and image.shape != self.size:
            raise VideoError(f"{self.path}: frames of different sizes: {self.size[1::-1]} then "
                             f"{image.shape[1::-1]} at {name or f'frame {self.count}'}")
        self.size = image.shape
        frame = self.transform(image) if self.transform else image
        if self.array is None:
            self.array = np.empty((max(capacity, copies), *frame.shape), frame.dtype)
        while self.count + copies > len(self.array):
            self.array = np.concatenate([self.array, np.empty_like(self.array)])
        self.array[self.count:self.count + copies] = frame
        self.count += copies


class _ConstantRate:
    """Puts decoded frames on a timeline of `fps` (the average rate) from the
    first frame's time, each slot holding the frame nearest to it: a
    variable-frame-rate video (a phone in low light) is then resampled by
    time, not by index. A constant-rate video's frames pass one for one, as
    do all from the first missing or non-increasing time stamp on (AVI has
    none: FFmpeg gives its B-frames their decoding times)."""

    def __init__(self, frames, fps, capacity):
        self.frames, self.fps, self.capacity = frames, fps, capacity
        self.held, self.start, self.filled = None, None, 0  # the last frame and its time, slots filled
        self.timed, self.decoded = bool(fps), 0

    def add(self, image, seconds):
        self.decoded += 1
        if self.timed and (seconds is None or (self.held is not None and seconds <= self.held[1])):
            self.timed = False
        if self.held is not None:
            self._release(seconds)
        if self.start is None:
            self.start = seconds
        self.held = (image, seconds)

    def close(self):
        """Releases the last frame (also after a decoding error)."""
        if self.held is not None:
            self._release(None)

    def _release(self, next_seconds):
        """Gives the held frame the slots nearer to it than to the next frame,
        at most a second's worth: of a longer gap (a jump in the time stamps),
        each side holds a second and the rest is skipped."""
        (image, seconds), self.held = self.held, None
        if self.timed:
            until = seconds + (1 / self.fps if next_seconds is None else (next_seconds - seconds)) / 2
            end = math.ceil((until - self.start) * self.fps - 1e-6)
            copies = max(0, min(end - self.filled, math.ceil(self.fps)))
            self.filled = max(self.filled, end)
        else:
            copies = 1
            self.filled += 1
        self.frames.append(image, self.capacity, copies=copies)


def _read_folder(path, frames):
    from PIL import Image

    files = frame_files(path)
    if not files:
        videos = sorted(child.name for child in path.iterdir() if child.suffix.lower() in VIDEO_SUFFIXES)
        folders = sorted(child.name for child in path.iterdir() if child.is_dir() and frame_files(child))
        held = " and ".join(f"{kind} ({first_few(names, 3)})"
                            for kind, names in (("videos", videos), ("frame folders", folders)) if names)
        hint = f": it holds {held}; pass those" if held else ""
        raise VideoError(f"{path}: a folder with no {'/'.join(FRAME_SUFFIXES)} frames{hint}")
    _check_one_sequence(path, files)
    for file in files:
        try:
            with Image.open(file) as image:
                if image.mode.startswith("I"):  # 16-bit grayscale: keep the high byte, not a clip at 255
                    image = Image.fromarray((np.asarray(image, np.uint32) >> 8).clip(0, 255).astype(np.uint8))
                image = np.asarray(image.convert("RGB"))
        except OSError as error:
            raise VideoError(f"{file}: unreadable frame ({error})") from None
        frames.append(image, len(files), file.name)


def _check_one_sequence(path, files):
    """Refuses a folder that holds several frame sequences (mmaction2's
    img_/x_/y_ frames, a stray cover.jpg) or a frame number twice; warns of a
    gap in the numbering (the frames are read as consecutive)."""
    sequences = {}
    for file in files:
        match = re.fullmatch(r"(.*?)(\d+)(\D*)", file.name)
        key = (match[1], match[3].lower()) if match else (file.name, "")
        sequences.setdefault(key, []).append((int(match[2]) if match else 0, file.name))
    if len(sequences) > 1:
        kinds = ", ".join(f"{prefix}N{suffix}: {len(members)}" for (prefix, suffix), members in sequences.items())
        raise VideoError(f"{path}: frames of {len(sequences)} sequences ({kinds}); keep one per folder")
    (members,) = sequences.values()
    steps = [b[0] - a[0] for a, b in zip(members, members[1:])]
    for (_, before), (_, after), gap in zip(members, members[1:], steps):
        if gap == 0:
            raise VideoError(f"{path}: {before} and {after} have the same frame number")
    step = min(steps, default=1)
    gaps = [(before, after) for (_, before), (_, after), gap in zip(members, members[1:], steps) if gap != step]
    if gaps:
        print(f"warning: {path}: frames missing from the numbering ({gaps[0][0]} then {gaps[0][1]}"
              f"{f' and {len(gaps) - 1} more gaps' if len(gaps) > 1 else ''}): read as consecutive", file=sys.stderr)


def _frame_rate(stream):
    """The rate a video is read at: its average (frames over duration, so a
    variable-rate video's timeline), or None where the header does not say."""
    return float(stream.average_rate) if stream.average_rate else None


def _video_seconds(container, stream):
    """The video track's duration by its header, or None: the stream's own,
    else Matroska's DURATION tag (HH:MM:SS.fraction), else the container's
    where the video is its only stream (an audio track may run longer)."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION", "")
    if re.fullmatch(r"\d+:\d\d:\d\d(\.\d+)?", tag):
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration and len(container.streams) == 1:
        return container.duration / 1e6
    return None


def _square_pixels_size(width, height, aspect):
    """The (width, height) that shows a frame whose pixels have the sample
    aspect ratio `aspect` (anamorphic DV, DVD and broadcast video) with square
    ones: one side shrunk, never enlarged; None where they are square."""
    if not aspect or aspect == 1:
        return None
    if aspect > 1:
        return width, max(1, round(height / aspect))
    return max(1, round(width * aspect)), height


def _square_rgb(frame, aspect):
    """A decoded frame as RGB with square pixels (area-averaged where a side shrinks)."""
    size = _square_pixels_size(frame.width, frame.height, aspect)
    if size is None:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")


def _read_file(path, frames, complete):
    """Decodes into `frames`; returns the frame rate."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            declared = stream.frames  # from the header; 0 where the container does not say (Matroska, WebM)
            seconds = _video_seconds(container, stream)
            start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            stream.thread_type = "AUTO"
            fps = _frame_rate(stream)
            aspect = stream.sample_aspect_ratio
            timeline = _ConstantRate(frames, fps, declared or 64)
            last_time = None
            try:
                for frame in container.decode(stream):
                    last_time = frame.time
                    image = _square_rgb(frame, aspect)
                    turns = round(frame.rotation / 90) % 4  # the display matrix (phones), counterclockwise
                    timeline.add(np.ascontiguousarray(np.rot90(image, turns)) if turns else image, frame.time)
            finally:
                timeline.close()
    except av.error.FFmpegError as error:
        if not frames.count:
            raise VideoError(f"{path}: cannot decode: {_undecodable(path, error)}") from None
        _cut_short(path, f"decoding failed after {timeline.decoded} frames ({error})", complete)
        return fps
    if timeline.decoded < declared - max(2, declared // 20):
        _cut_short(path, f"decoded {timeline.decoded} of the {declared} frames its header declares", complete)
    decoded = last_time - start + 1 / fps if last_time is not None and fps else None
    if not declared and seconds and decoded and decoded < seconds - max(2 / fps, seconds / 20):
        _cut_short(path, f"decoded {decoded:.2f} s of the {seconds:.2f} s its header declares", complete)
    return fps


def _undecodable(path, error):
    """Why FFmpeg decodes no frame of the file at `path`, having raised `error`."""
    import av

    if path.stat().st_size == 0:
        return "an empty file"
    if isinstance(error, av.error.InvalidDataError):  # an MP4 without its index ("moov atom not found"), say
        return "no video FFmpeg can read: a file cut short (an unfinished copy, download or recording) or not a video"
    return str(error)


def _cut_short(path, problem, complete):
    """Refuses a truncated or corrupt file where completeness is asked (convert
    skips it); else warns that its frames are those that decoded."""
    if complete:
        raise VideoError(f"{path}: {problem}: truncated or corrupt") from None
    print(f"warning: {path}: {problem}: truncated or corrupt; read as the frames that decoded", file=sys.stderr)
