"""Can a model learn some classes of the synthetic set (by default the demo's
hard pair, the rotation direction)? Renders the set if absent, loads
clips of the chosen classes into memory through `keras_r3d.data` (train:
`--windows` random windows per video; val: the centre window), and trains each
model with AdamW, printing train and val clip accuracy after every pass of
`--clips_per_pass` clips. Writes OUTPUT.json.

    python benchmarks/demo_probe.py --data /tmp/rot --models ShuffleNetV2-0.25x,plain --passes 12 \\
        --output benchmarks/demo_probe_rotation
    python benchmarks/demo_probe.py --data /tmp/rot_big --shape_scale 0.6 --rotation_degrees 280,340 ...

`plain` is a four-layer 3D CNN (16-32-64-128 channels, 3x3x3 convs, the
zoo's stem stride and padded max pools) built from `keras_r3d.layers`: not a
zoo model, a yardstick for how learnable the classes are. The other `plain-*`
yardsticks (`PLAIN_CNNS`) each change one thing on the way to the zoo's blocks:
`separable` makes the last three convs depthwise 3x3x3 + pointwise (MobileNetV1
blocks), `deep` stacks four such blocks per stage, `strided` downsamples with
the first depthwise conv of a stage (stride 2) instead of a max pool, `linear`
drops the ReLU after the depthwise convs, and `narrow` halves the widths
(16-32-64, those of ShuffleNetV2 0.25x's branches).
"""
import argparse
import json
import pathlib
import sys
import time

import numpy as np


def load_clips(data, classes, frames, size, temporal_downsample, windows):
    """(x_train, y_train, x_val, y_val) of `classes` only, labels 0..n-1."""
    import keras_r3d
    from keras_r3d import data as r3d_data

    names = r3d_data.label_names(f"{data}/train-*.tfrecord")
    unknown = sorted(set(classes) - set(names))
    if unknown:
        raise SystemExit(f"unknown classes {unknown}; the set has {names}")
    keep = [names.index(c) for c in classes]
    contract = keras_r3d.Preprocessing(frames=frames, size=size, temporal_downsample=temporal_downsample)

    def grab(split, seed):
        xs, ys = [], []
        for x, y in r3d_data.make_dataset(f"{data}/{split}-*.tfrecord", split, contract, 16, crop="center",
                                          shuffle_seed=seed, drop_remainder=False):
            mask = np.isin(y.numpy(), keep)
            xs.append(x.numpy()[mask].astype(np.float16))
            ys.append(np.searchsorted(keep, y.numpy()[mask]))
        return np.concatenate(xs), np.concatenate(ys)

    train = [grab("train", seed) for seed in range(windows)]
    x_val, y_val = grab("val", None)
    if not len(train[0][1]) or not len(y_val):
        raise SystemExit(f"{data}: no train or no val videos of {classes}; render more videos per class")
    return np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]), x_val, y_val


PLAIN_CNNS = {
    "plain": {},
    "plain-separable": {"separable": True},
    "plain-separable-deep": {"separable": True, "blocks_per_stage": 4},
    "plain-separable-strided": {"separable": True, "downsample": "stride"},
    "plain-separable-linear": {"separable": True, "relu_after_depthwise": False},
    "plain-separable-narrow": {"separable": True, "widths": (16, 32, 64)},
    "plain-separable-strided-linear": {"separable": True, "downsample": "stride", "relu_after_depthwise": False},
    "plain-separable-strided-linear-narrow": {"separable": True, "downsample": "stride",
                                              "relu_after_depthwise": False, "widths": (16, 32, 64)},
}


def plain_cnn(input_shape, num_classes, separable=False, blocks_per_stage=1, downsample="pool",
              relu_after_depthwise=True, widths=(32, 64, 128)):
    import keras

    from keras_r3d import layers
    from keras_r3d.models import common

    def conv_bn(x, width, kernel_size, name, relu=True, **kwargs):
        x = common.batch_norm(common.conv(x, width, kernel_size, name, **kwargs), f"{name}_bn")
        return common.relu(x, f"{name}_relu") if relu else x

    x = inputs = keras.Input(input_shape)
    x = conv_bn(x, 16, 3, "conv0", strides=(1, 2, 2))
    x = layers.MaxPool3D(3, strides=2, padding=1, name="pool0")(x)
    for i, width in enumerate(widths, 1):
        for j in range(blocks_per_stage):
            # Stages 2 and 3 start at half the resolution: a max pool before, or a strided first conv.
            halves = i > 1 and j == 0
            strides = 2 if halves and downsample == "stride" else 1
            if halves and downsample == "pool":
                x = layers.MaxPool3D(3, strides=2, padding=1, name=f"pool{i - 1}")(x)
            if separable:
                x = conv_bn(x, x.shape[-1], 3, f"dw{i}_{j}", relu=relu_after_depthwise, strides=strides,
                            groups=x.shape[-1])
                x = conv_bn(x, width, 1, f"pw{i}_{j}")
            else:
                x = conv_bn(x, width, 3, f"conv{i}_{j}", strides=strides)
    x = keras.layers.GlobalAveragePooling3D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def probe(name, clips, passes, clips_per_pass, lr, weight_decay, seed):
    import keras

    import keras_r3d

    x_train, y_train, x_val, y_val = clips
    num_classes = int(y_train.max()) + 1
    keras.utils.set_random_seed(seed)
    shape = x_train.shape[1:]
    model = plain_cnn(shape, num_classes, **PLAIN_CNNS[name]) if name in PLAIN_CNNS else \
        keras_r3d.create_model(name, num_classes=num_classes, input_shape=shape)
    model.compile(optimizer=keras.optimizers.AdamW(lr, weight_decay=weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    order = np.random.default_rng(seed).permutation(len(x_train))
    history, start = [], time.perf_counter()
    for i in range(passes):
        take = order[np.arange(i * clips_per_pass, (i + 1) * clips_per_pass) % len(order)]
        fit = model.fit(x_train[take].astype(np.float32), y_train[take], batch_size=16, epochs=1, verbose=0)
        _, val = model.evaluate(x_val.astype(np.float32), y_val, batch_size=32, verbose=0)
        history.append({"pass": i + 1, "train_top1": round(fit.history["accuracy"][-1], 3),
                        "val_top1": round(float(val), 3)})
        print(f"{name} pass {i + 1}: train {history[-1]['train_top1']:.2f} val {history[-1]['val_top1']:.2f}",
              file=sys.stderr, flush=True)
    return {"model": name, "lr": lr, "weight_decay": weight_decay, "seconds": round(time.perf_counter() - start),
            "passes": history}


def main():
    from tfrecords_tools.synthetic import DEFAULTS, SyntheticConfig, make_synthetic

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a synthetic set; rendered with the options below if absent")
    parser.add_argument("--classes", default="rotate_clockwise,rotate_counterclockwise")
    parser.add_argument("--models", default="ShuffleNetV2-0.25x,plain",
                        help=f"registry names, or the yardsticks {', '.join(PLAIN_CNNS)}")
    parser.add_argument("--videos_per_class", type=int, default=192)
    parser.add_argument("--video_frames", type=int, default=20)
    parser.add_argument("--size", type=int, default=64, help="rendered and trained frame side")
    parser.add_argument("--shape_scale", type=float, default=DEFAULTS.shape_scale)
    parser.add_argument("--rotation_degrees", default="150,220", help="MIN,MAX total turn per video")
    parser.add_argument("--spiral_arms", type=int, default=DEFAULTS.spiral_arms)
    parser.add_argument("--spiral_twist", type=float, default=DEFAULTS.spiral_twist)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--temporal_downsample", type=int, default=2)
    parser.add_argument("--windows", type=int, default=3, help="random train windows per video")
    parser.add_argument("--passes", type=int, default=12)
    parser.add_argument("--clips_per_pass", type=int, default=250)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", required=True, help="stem of the .json")
    args = parser.parse_args()
    low, high = (float(v) for v in args.rotation_degrees.split(","))
    config = SyntheticConfig(videos_per_class=args.videos_per_class, size=args.size, frames=args.video_frames,
                             shape_scale=args.shape_scale, rotation_min_degrees=low, rotation_max_degrees=high,
                             spiral_arms=args.spiral_arms, spiral_twist=args.spiral_twist)
    if not (pathlib.Path(args.data) / "manifest.json").exists():
        make_synthetic(args.data, config)
    clips = load_clips(args.data, args.classes.split(","), args.frames, args.size, args.temporal_downsample,
                       args.windows)
    result = {"command": " ".join([pathlib.Path(sys.executable).name] + sys.argv), "settings": vars(args),
              "train_clips": len(clips[1]), "val_clips": len(clips[3]), "probes": []}
    for name in args.models.split(","):
        result["probes"].append(probe(name, clips, args.passes, args.clips_per_pass, args.lr,
                                      args.weight_decay, args.seed))
        pathlib.Path(args.output).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
