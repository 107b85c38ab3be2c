"""Reading videos (PyAV) and frame folders into uint8 RGB arrays."""
import pathlib
import re

import numpy as np

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


def read_video(path, max_frames=None, complete=False, frame_transform=None):
    """Decodes a video file or frame folder.

    Args:
        complete: raise on a video whose decoding fails part way (truncated
            or corrupt), instead of keeping the frames that decoded.
        frame_transform: a function applied to each RGB frame as it is
            decoded (a resize, say), so that a long high-resolution video is
            never held at full size.
    Returns:
        (frames, fps): uint8 `(T, H, W, 3)` RGB frames and the frame rate, or
        None where the source does not say (frame folders).
    Raises:
        VideoError: the path is missing, unreadable, or holds no frames.
    """
    path = pathlib.Path(path)
    transform = frame_transform or (lambda frame: frame)
    if path.is_dir():
        frames, fps = _read_folder(path, max_frames, transform), None
    elif path.suffix.lower() in FRAME_SUFFIXES and path.is_file():
        raise VideoError(f"{path}: one image, not a video: pass the folder of its frames")
    elif path.is_file():
        frames, fps = _read_file(path, max_frames, complete, transform)
    else:
        raise VideoError(f"{path}: no such file or folder")
    if len(frames) == 0:
        raise VideoError(f"{path}: no frames could be decoded")
    return np.stack(frames), fps


def _read_folder(path, max_frames, transform):
    from PIL import Image

    files = frame_files(path)[:max_frames]
    if not files:
        videos = sorted(child.name for child in path.iterdir() if child.suffix.lower() in VIDEO_SUFFIXES)
        folders = sorted(child.name for child in path.iterdir() if child.is_dir() and frame_files(child))
        held = " and ".join(f"{kind} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                            for kind, names in (("videos", videos), ("frame folders", folders)) if names)
        hint = f": it holds {held}; pass those" if held else ""
        raise VideoError(f"{path}: a folder with no {'/'.join(FRAME_SUFFIXES)} frames{hint}")
    frames, sizes = [], set()
    for file in files:
        try:
            with Image.open(file) as image:
                if image.mode.startswith("I"):  # 16-bit grayscale: keep the high byte, not a clip at 255
                    image = Image.fromarray((np.asarray(image, np.uint32) >> 8).clip(0, 255).astype(np.uint8))
                sizes.add(image.size)
                frames.append(transform(np.asarray(image.convert("RGB"))))
        except OSError as error:
            raise VideoError(f"{file}: unreadable frame ({error})") from None
    if len(sizes) > 1:
        raise VideoError(f"{path}: frames of different sizes")
    return frames


def _read_file(path, max_frames, complete, transform):
    import av

    frames, size = [], None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            declared = stream.frames  # from the header; 0 where the container does not say
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate) if stream.average_rate else None
            for frame in container.decode(stream):
                image = frame.to_ndarray(format="rgb24")
                turns = round(frame.rotation / 90) % 4  # the display matrix (phones), counterclockwise
                image = np.ascontiguousarray(np.rot90(image, turns)) if turns else image
                if size and image.shape != size:
                    raise VideoError(f"{path}: the frame size changes from {size[1::-1]} to "
                                     f"{image.shape[1::-1]} at frame {len(frames)}")
                size = image.shape
                frames.append(transform(image))
                if max_frames and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as error:
        if not frames:
            raise VideoError(f"{path}: cannot decode ({error})") from None
        if complete:
            raise VideoError(f"{path}: decoding failed after {len(frames)} frames ({error}): truncated or "
                             "corrupt") from None
        # A truncated file: keep the frames that decoded.
    if complete and not max_frames and len(frames) < declared - max(2, declared // 20):
        raise VideoError(f"{path}: decoded {len(frames)} of the {declared} frames its header declares: "
                         "truncated or corrupt")
    return frames, fps
