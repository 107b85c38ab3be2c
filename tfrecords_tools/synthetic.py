"""The embedded default data set: synthetic motion videos, as TFRecords.

    python -m tfrecords_tools.synthetic --output DIR [--videos_per_class N --size S --seed K ...]

(every `SyntheticConfig` field is a flag).

Renders real H.264 `.mp4` files with PyAV into `DIR/videos/<class>/`, then
converts them with `tfrecords_tools.convert` (format `folders`, a hashed
`val` split) into `DIR/{train,val}-*.tfrecord` + `DIR/manifest.json`.

Each video is one asymmetric shape, striped with a spiral about its centre,
over a smooth textured background, moving in one of 8 classes: swipe
left/right/up/down, zoom in/out, rotate clockwise/counterclockwise. Classes
come in pairs: video i of a pair is one rendering, played forward in one
class and backwards in the other, and both
copies go to the same split. So neither a frame nor a memorised video says
anything about the class: only the temporal order does, and a clip played
backwards is its partner class. Every default lives in `DEFAULTS`.
"""
import argparse
import dataclasses
import fractions
import json
import os
import pathlib
import sys

import numpy as np

# Forward class, then the class its reversed videos belong to.
PAIRS = (("swipe_right", "swipe_left"), ("swipe_down", "swipe_up"),
         ("zoom_in", "zoom_out"), ("rotate_counterclockwise", "rotate_clockwise"))


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic set (build time: benchmarks/data_pipeline.md).

    Attributes:
        videos_per_class: videos rendered per class (8 classes).
        size: width and height of the rendered videos, in pixels.
        frames: frames per video; the demo samples 16 of them.
        fps: frame rate written into the video files.
        val_fraction: share of videos (by a hash of the path) in the val split.
        seed: seeds every random choice; the same seed gives the same videos.
        shards: shards per split.
        shape_scale: side of the moving shape, as a fraction of the frame side.
        rotation_min_degrees, rotation_max_degrees: the range of a rotating
            video's total turn, drawn per video.
        spiral_arms, spiral_twist: the dark spiral stripes on every shape
            (0 arms: a plain fill). A turning spiral seems to expand or shrink
            (the barber-pole effect), so the direction of a turn shows in
            local motion; without them ShuffleNetV2 0.25x did not learn it
            (README, "The demo").
    """

    videos_per_class: int = 64
    size: int = 64
    frames: int = 20
    fps: float = 12.0
    val_fraction: float = 0.25
    seed: int = 0
    shards: int = 4
    shape_scale: float = 0.65
    rotation_min_degrees: float = 150.0
    rotation_max_degrees: float = 220.0
    spiral_arms: int = 2
    spiral_twist: float = 2.0

    def __post_init__(self):
        for name in ("videos_per_class", "size", "frames", "shards"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.size < 32 or self.size % 2:
            raise ValueError(f"size must be even and >= 32 (H.264 needs even sides), got {self.size}")
        if self.frames < 8:
            raise ValueError(f"frames must be >= 8, got {self.frames}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.1 <= self.shape_scale <= 0.7:
            raise ValueError(f"shape_scale must be in [0.1, 0.7], got {self.shape_scale}")
        if int(self.spiral_arms) < 0:
            raise ValueError(f"spiral_arms must be >= 0, got {self.spiral_arms!r}")
        if not 0.0 < self.rotation_min_degrees <= self.rotation_max_degrees:
            raise ValueError("rotation degrees must satisfy 0 < min <= max, got "
                             f"{self.rotation_min_degrees}, {self.rotation_max_degrees}")


DEFAULTS = SyntheticConfig()
SETTINGS_FILE = "synthetic.json"  # the SyntheticConfig of a set, written before its first video

# Asymmetric outlines (unit square, y down): their orientation shows rotation.
SHAPES = (
    ((0.1, 0.1), (0.4, 0.1), (0.4, 0.6), (0.9, 0.6), (0.9, 0.9), (0.1, 0.9)),            # L
    ((0.1, 0.35), (0.6, 0.35), (0.6, 0.1), (0.95, 0.5), (0.6, 0.9), (0.6, 0.65), (0.1, 0.65)),  # arrow
    ((0.1, 0.1), (0.9, 0.1), (0.9, 0.35), (0.62, 0.35), (0.62, 0.9), (0.38, 0.9), (0.38, 0.35), (0.1, 0.35)),  # T
    ((0.15, 0.9), (0.5, 0.1), (0.85, 0.9), (0.5, 0.65)),                                    # dart
)


def _background(rng, size):
    """A smooth, low-contrast two-colour texture with fine grain, uint8
    (size, size, 3): visible, but quieter than the moving shape."""
    from PIL import Image

    coarse = rng.random((6, 6)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC))
    field = np.clip(field, 0.0, 1.0)[..., None]
    low = rng.uniform(70, 180, 3)
    high = low + rng.uniform(-35, 35, 3)
    grain = rng.normal(0.0, 3.0, (size, size, 1))
    return np.clip(low + (high - low) * field + grain, 0, 255).astype(np.uint8)


def _sprite(rng, side, config):
    """An RGBA shape of a random saturated colour with a dark outline and
    darker logarithmic-spiral stripes about its centre (the centre it turns
    about)."""
    import colorsys

    from PIL import Image, ImageDraw

    sprite = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    outline = [(x * side, y * side) for x, y in SHAPES[rng.integers(len(SHAPES))]]
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(rng.random(), 0.9, 1.0))
    ImageDraw.Draw(sprite).polygon(outline, fill=colour + (255,), outline=(0, 0, 0, 255), width=max(1, side // 24))
    if not config.spiral_arms:
        return sprite
    y, x = np.mgrid[0:side, 0:side] + 0.5 - side / 2
    stripes = np.sin(config.spiral_arms * np.arctan2(y, x) + config.spiral_twist * np.log(np.hypot(x, y) + 1.0)) > 0
    pixels = np.array(sprite)
    dark = stripes & (pixels[..., 3] > 0)
    pixels[dark, :3] = (pixels[dark, :3] * 0.35).astype(np.uint8)
    return Image.fromarray(pixels, "RGBA")


def _trajectory(rng, motion, config):
    """Per-frame (x, y, scale, angle in degrees) of a forward motion."""
    t = np.linspace(0.0, 1.0, config.frames)
    size = config.size
    jitter = lambda: rng.uniform(-0.04, 0.04) * size * t  # a small drift in every class
    angle = np.full_like(t, rng.uniform(0, 360))
    scale = np.full_like(t, rng.uniform(0.8, 1.1))
    x = np.full_like(t, rng.uniform(0.35, 0.65) * size) + jitter()
    y = np.full_like(t, rng.uniform(0.35, 0.65) * size) + jitter()
    if motion in ("swipe_right", "swipe_down"):
        distance = rng.uniform(0.4, 0.55) * size
        start = rng.uniform(0.2 * size, 0.8 * size - distance)
        (x if motion == "swipe_right" else y)[:] = start + distance * t + jitter()
    elif motion == "zoom_in":
        scale = rng.uniform(0.35, 0.55) + rng.uniform(0.8, 1.1) * t
    elif motion == "rotate_counterclockwise":
        turn = rng.uniform(config.rotation_min_degrees, config.rotation_max_degrees)
        angle = angle + turn * t  # PIL rotates counterclockwise
    return x, y, scale, angle


def render_frames(motion, rng, config):
    """The uint8 RGB frames of one forward `motion`."""
    from PIL import Image

    size = config.size
    background = Image.fromarray(_background(rng, size)).convert("RGBA")
    base = int(config.shape_scale * size)
    sprite = _sprite(rng, 2 * base, config)
    frames = []
    for x, y, scale, angle in zip(*_trajectory(rng, motion, config)):
        side = max(4, int(base * scale))
        shape = sprite.resize((side, side), Image.LANCZOS).rotate(angle, Image.BICUBIC, expand=True)
        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        layer.paste(shape, (int(x - shape.width / 2), int(y - shape.height / 2)), shape)
        frame = Image.alpha_composite(background, layer)
        frames.append(np.asarray(frame.convert("RGB")))
    return frames


def write_video(path, frames, config):
    """Writes `frames` as an H.264 video, atomically."""
    import av

    size = config.size
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}.mp4")
    with av.open(str(temporary), "w") as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(config.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    os.replace(temporary, path)


def render_videos(folder, config=DEFAULTS, progress=True):
    """Renders every video under `folder/<class>/`; existing ones are kept."""
    from tqdm import tqdm

    jobs = [(pair, i) for pair in PAIRS for i in range(config.videos_per_class)]
    for pair, i in tqdm(jobs, desc="rendering", unit="pair", disable=not progress, dynamic_ncols=True):
        # Video i of a pair's two classes is one rendering, played forward in the
        # first and backwards in the second, and named after its forward motion:
        # appearance cannot tell the classes apart, even by memorising a video,
        # and both land in the same split. It is rendered once for both.
        paths = [pathlib.Path(folder) / name / f"{pair[0]}_{i:04d}.mp4" for name in pair]
        if all(path.exists() for path in paths):
            continue
        frames = render_frames(pair[0], np.random.default_rng([config.seed, PAIRS.index(pair), i]), config)
        for path, ordered in zip(paths, (frames, frames[::-1])):
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                write_video(path, ordered, config)


def make_synthetic(output, config=DEFAULTS, workers=None, progress=True):
    """Renders the synthetic videos and converts them; returns the manifest.

    Re-running with the same config resumes (existing videos and shards are
    kept); a folder that holds (part of) a set made with another config, or
    with an unknown one, is a ValueError.
    """
    from keras_r3d.files import write_atomic
    from tfrecords_tools.convert import convert

    output = pathlib.Path(output)
    videos = output / "videos"
    recorded = made_with(output)
    if recorded != config and (recorded is not None or videos.exists()):
        raise ValueError(f"{output} holds (part of) a synthetic set made with other settings than {config} "
                         f"({recorded or 'not recorded: an older version'}): delete it to regenerate it, "
                         f"or use another folder")
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(output / SETTINGS_FILE, json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    render_videos(videos, config, progress)
    return convert("folders", videos, output, num_shards=config.shards, workers=workers or os.cpu_count(),
                   short_side=0, val_fraction=config.val_fraction, progress=progress)


def made_with(output):
    """The `SyntheticConfig` the set in `output` was made with, or None (no
    set there, or one made before the settings were recorded)."""
    path = pathlib.Path(output) / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        return SyntheticConfig(**json.loads(path.read_text()))
    except (TypeError, ValueError) as error:  # unknown or missing keys, a damaged file
        raise ValueError(f"{path}: not the settings of a synthetic set ({error}); delete {output} "
                         "to regenerate it") from None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfrecords_tools.synthetic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    for field in dataclasses.fields(SyntheticConfig):
        parser.add_argument(f"--{field.name}", type=type(field.default), default=field.default)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = vars(parser.parse_args(argv))
    output, workers = args.pop("output"), args.pop("workers")
    try:
        manifest = make_synthetic(output, SyntheticConfig(**args), workers)
    except ValueError as error:  # a bad setting, or a folder made with other settings
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split, entry in manifest["splits"].items():
        print(f"{split}: {entry['videos']} videos, per class {entry['per_class']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
